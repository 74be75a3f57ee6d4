"""Converted tiny models run in llama.cpp and agree with the source checkpoint run by transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_FAMILIES, llama_cpp_logits
from gguf_edit import rewrite
from hf_models import transformers_logits

pytestmark = pytest.mark.slow  # torch / transformers

pytest.importorskip("torch", reason="needs the reference extra (torch, transformers)")

N_TOKENS = 48
N_SEQUENCES = 4  # top-1 agreement is a rate: measured over 4 inputs of 48 tokens (192 positions)
# Measured max |diff| / max |logit| (llama.cpp F32 KV cache, 4 x 48 tokens): f32 4.6e-7 .. 5.6e-7 over the five
# cases below, bf16 2.8e-3 .. 4.0e-3. The f32 bound leaves room for other CPUs' summation order and none for a
# real mistake (all-ones rope_freqs: 1.2e-1, see test_all_ones_rope_freqs_fails).
F32_REL = 1e-5
BF16_REL = 1e-2
# The tiny exaone3.5 with llama3 scaling's original context at 32 instead of 8192: wavelengths between 8 and 32
# are blended and longer ones divided by 8, so the scaling moves the logits within 48 tokens (at 8192 only
# wavelengths above 2048 are scaled: they turn by less than 9 degrees over 48 positions, and a wrong
# `rope_freqs` passed the old 1e-2 bound, issue 14).
ROPE32 = "exaone3.5-rope32"
CASES = (*TINY_FAMILIES, ROPE32)


def tokens_for(seed: int = 1) -> list[int]:
    # Ids from the trained part of the tiny tokenizer and its special tokens: real, reachable tokens.
    rng = np.random.default_rng(seed)
    return [1] + rng.integers(362, 1100, N_TOKENS - 1).tolist()


@pytest.fixture(scope="module")
def source(tiny_dir, tmp_path_factory):
    """source(case) -> checkpoint directory; ROPE32 is the tiny exaone3.5 with original context 32."""
    from exaone_gguf.tiny import make_tiny

    made = {}

    def get(case: str):
        if case != ROPE32:
            return tiny_dir(case)
        if case not in made:
            ckpt = make_tiny("exaone3.5", tmp_path_factory.mktemp("rope32") / "ckpt")
            cfg = json.loads((ckpt / "config.json").read_text())
            cfg["rope_scaling"]["original_max_position_embeddings"] = 32
            (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
            made[case] = ckpt
        return made[case]

    return get


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions

    root = tmp_path_factory.mktemp("logits-gguf")
    made = {}

    def get(case: str, outtype: str):
        if (case, outtype) not in made:
            out = root / f"{case}-{outtype}.gguf"
            convert(source(case), out, ConvertOptions(outtype=outtype))
            made[case, outtype] = out
        return made[case, outtype]

    return get


@pytest.fixture(scope="module")
def hf_logits(source, tmp_path_factory):
    """Transformers' logits of each case's N_SEQUENCES inputs, computed once per module."""
    made = {}

    def get(case: str) -> list[np.ndarray]:
        if case not in made:
            work = tmp_path_factory.mktemp("hf")
            made[case] = [transformers_logits(source(case), tokens_for(s), work) for s in range(1, N_SEQUENCES + 1)]
        return made[case]

    return get


def compare(refs: list[np.ndarray], gguf) -> tuple[float, float]:
    """(same top-1 rate, max over sequences of max |diff| / max |logit|) of llama.cpp on `gguf` vs `refs`."""
    same, rels = [], []
    for seed, ref in zip(range(1, N_SEQUENCES + 1), refs):
        got = llama_cpp_logits(gguf, tokens_for(seed))
        assert ref.shape == got.shape == (N_TOKENS, 102400)
        same.append(ref.argmax(-1) == got.argmax(-1))
        rels.append(float(np.abs(ref - got).max() / np.abs(ref).max()))
    return float(np.mean(same)), max(rels)


def check(outtype: str, same_top1: float, rel: float) -> None:
    if outtype == "f32":
        assert same_top1 == 1.0 and rel <= F32_REL, (same_top1, rel)
    else:
        assert same_top1 >= 0.98 and rel <= BF16_REL, (same_top1, rel)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_logits_match_transformers(case, outtype, hf_logits, converted):
    same_top1, rel = compare(hf_logits(case), converted(case, outtype))
    print(f"{case} {outtype}: same top-1 {same_top1:.3f}, max |diff| / max |logit| {rel:.2e}")
    check(outtype, same_top1, rel)


def test_rope32_scaling_is_not_trivial(source):
    """The ROPE32 case exercises all three llama3 bands on frequencies that turn within 48 tokens."""
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model.rope import base_inv_freq, llama3_divisors

    spec = load_checkpoint(source(ROPE32)).spec
    div = llama3_divisors(spec)
    turns = base_inv_freq(spec) * N_TOKENS / (2 * np.pi)  # full turns of each frequency over the input
    assert (div == 1).any() and (div == 8).any() and ((div > 1) & (div < 8)).any()
    assert turns[div == 8].max() > 1.0  # a divided frequency turns more than once: dividing it shows


def test_all_ones_rope_freqs_fails(hf_logits, converted, tmp_path):
    """A converter that writes rope_freqs as all ones (no llama3 scaling) fails the f32 check."""
    good = converted(ROPE32, "f32")
    bad = rewrite(
        good,
        tmp_path / "ones.gguf",
        tensors={"rope_freqs.weight": lambda raw: np.ones(raw.size // 4, np.float32).view(np.uint8)},
    )
    same_top1, rel = compare(hf_logits(ROPE32), bad)
    print(f"all-ones rope_freqs: same top-1 {same_top1:.3f}, max |diff| / max |logit| {rel:.2e}")
    with pytest.raises(AssertionError):
        check("f32", same_top1, rel)
