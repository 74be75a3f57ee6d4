"""`validate MODEL --against BASE.gguf` computes llama-perplexity's KL-divergence figures (checked against the
real llama-perplexity built by scripts/llama_tools.py) and judges them like the other fidelity figures."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from gguf_edit import rewrite
from typer.testing import CliRunner

from exaone_gguf.cli import app
from exaone_gguf.model.texts import load_text

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

CTX, CHUNKS = 64, 4  # 4 chunks x 31 scored tokens = 124: llama-perplexity prints statistics from 100 on

LLAMA_FIGURES = {  # our metric -> llama-perplexity's line
    "ppl_test": r"Mean PPL\(Q\)\s*:\s*(\S+)",
    "ppl_ref": r"Mean PPL\(base\)\s*:\s*(\S+)",
    "mean_kld": r"Mean\s+KLD:\s*(\S+)",
    "median_kld": r"Median\s+KLD:\s*(\S+)",
    "p99_kld": r"99\.0%\s+KLD:\s*(\S+)",
    "max_kld": r"Maximum KLD:\s*(\S+)",
    "same_top1": r"Same top p:\s*(\S+)",
}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text(load_text(None), encoding="utf-8")
    return path


def llama_perplexity(tools: dict, model: Path, base: Path, text: Path, work: Path) -> dict[str, float]:
    """llama.cpp's route: base logits saved with --kl-divergence-base, then --kl-divergence on the model."""
    kld = work / "base.kld"
    common = ["-f", str(text), "-c", str(CTX), "-t", "2"]
    subprocess.run(
        [
            str(tools["llama-perplexity"]),
            "-m",
            str(base),
            *common,
            "--chunks",
            str(CHUNKS),
            "--kl-divergence-base",
            str(kld),
        ],
        check=True,
        capture_output=True,
    )
    res = subprocess.run(
        [
            str(tools["llama-perplexity"]),
            "-m",
            str(model),
            *common,
            "--kl-divergence-base",
            str(kld),
            "--kl-divergence",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    out = res.stdout + res.stderr
    return {k: float(re.search(pat, out).group(1)) for k, pat in LLAMA_FIGURES.items()}


def run_against(model: Path, base: Path, text: Path, tmp_path: Path, *extra: str):
    report = tmp_path / "against.json"
    res = CliRunner().invoke(
        app,
        [
            "validate",
            str(model),
            "--against",
            str(base),
            "--text",
            str(text),
            "--ctx",
            str(CTX),
            "--chunks",
            str(CHUNKS),
            "--json",
            str(report),
            *extra,
        ],
    )
    return res, (json.loads(report.read_text()) if report.exists() else None)


def test_against_agrees_with_llama_perplexity(llama_tools, tiny_gguf, text_file, tmp_path):
    model, base = tiny_gguf("exaone4", "q4_k_m"), tiny_gguf("exaone4", "f32")
    res, report = run_against(model, base, text_file, tmp_path)
    assert res.exit_code == 0, res.output
    ours = report["metrics"]
    assert ours["n_tokens"] == CHUNKS * (CTX - 1 - CTX // 2) and ours["n_chunks"] == CHUNKS
    theirs = llama_perplexity(llama_tools, model, base, text_file, tmp_path)
    for key, value in theirs.items():
        print(f"{key}: ours {ours[key]:.6g}, llama-perplexity {value:.6g}")
        assert ours[key] == pytest.approx(value, rel=1e-2), key
    assert ours["mean_kld"] > 1e-3  # a Q4_K_M really differs from its F32: the agreement is not 0 == 0


@pytest.mark.parametrize("outtype", ["q8_0", "q2_k"])
def test_against_another_model_fails_by_default(tiny_gguf, text_file, tmp_path, outtype):
    """Same vocabulary, other weights (seed 1): mean KLD and same top p lie far outside any honest file of the type,
    so the file fails without flags (exit 1), each gross figure named; Q2_K's loose limits still catch it. (Both
    random networks find the text about equally unlikely, so the perplexity ratio says nothing here; the real
    network's test below fails on it too.)"""
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.tiny import make_tiny

    other = tmp_path / "other.gguf"
    convert(make_tiny("exaone4", tmp_path / "seed1", seed=1), other, ConvertOptions(outtype=outtype))
    res, report = run_against(other, tiny_gguf("exaone4", "f32"), text_file, tmp_path)
    m = report["metrics"]
    print(
        f"another model at {outtype}: mean KLD {m['mean_kld']:.3g}, same top {m['same_top1']:.1f}%, "
        f"PPL {m['ppl_test']:.4g} vs {m['ppl_ref']:.4g}"
    )
    failed = {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}
    assert res.exit_code == 1 and "against F32: mean KLD" in res.output, res.output
    assert {"against F32: mean KLD", "against F32: same top p"} <= set(failed), failed
    assert all("far outside any honest" in d for d in failed.values()), failed


@pytest.mark.parametrize("outtype", ["q8_0", "q2_k"])
def test_honest_files_pass_against_by_default_and_the_gate_stays_strict(tiny_gguf, text_file, tmp_path, outtype):
    """An honest file passes (exit 0) without flags, its misses of the per-type thresholds warnings; a threshold
    it misses fails it (exit 1): the strict gate is unchanged."""
    model, base = tiny_gguf("exaone4", outtype), tiny_gguf("exaone4", "f32")
    res, report = run_against(model, base, text_file, tmp_path)
    m = report["metrics"]
    print(
        f"honest {outtype}: mean KLD {m['mean_kld']:.3g}, same top {m['same_top1']:.1f}%, PPL {m['ppl_test']:.4g} "
        f"(stored as the base's: {m['ppl_test_stored']:.4g}) vs {m['ppl_ref']:.4g}"
    )
    assert res.exit_code == 0, res.output
    assert {c["status"] for c in report["checks"]} <= {"pass", "warn"}
    assert "against F32: perplexity" in {c["name"] for c in report["checks"]}
    res, report = run_against(model, base, text_file, tmp_path, "--threshold", f"max_mean_kld={m['mean_kld'] / 2}")
    assert res.exit_code == 1 and "against F32: mean KLD" in res.output, res.output


def test_against_a_file_of_another_vocabulary_fails(tiny_gguf, text_file, tmp_path):
    base = tiny_gguf("exaone4", "f32")
    from exaone_gguf.gguf_io import read_gguf

    f = read_gguf(base)
    tokens = list(f.metadata["tokenizer.ggml.tokens"])
    f.close()
    tokens[400] = tokens[400] + "x"
    other = rewrite(tiny_gguf("exaone4", "q8_0"), tmp_path / "vocab.gguf", kv={"tokenizer.ggml.tokens": tokens})
    res, report = run_against(other, base, text_file, tmp_path)
    assert res.exit_code == 1, res.output
    assert report["checks"][0]["status"] == "fail" and "list different tokens" in report["checks"][0]["detail"]


def test_against_needs_two_windows_of_text(tiny_gguf, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("짧은 글. A short text.", encoding="utf-8")
    res = CliRunner().invoke(
        app,
        [
            "validate",
            str(tiny_gguf("exaone4", "q8_0")),
            "--against",
            str(tiny_gguf("exaone4", "f32")),
            "--text",
            str(short),
            "--ctx",
            str(CTX),
        ],
    )
    assert res.exit_code == 2 and "needs at least 2 x --ctx = 128" in res.output, res.output


def test_against_a_random_network_with_the_real_vocabulary_fails_and_the_real_q2_k_passes(smollm2, text_file, tmp_path):
    """The trained SmolLM2-135M (EXAONE 3.x layout, BF16) as BASE: a random 2-layer network written with its config
    and tokenizer (same vocabulary) fails without flags on every gross figure, perplexity included; the real
    network's own honest Q2_K file passes."""
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.tiny import make_tiny

    real = smollm2("exaone3")
    base = convert(real, tmp_path / "real-bf16.gguf", ConvertOptions(outtype="bf16")).output
    rand = make_tiny(None, tmp_path / "random", from_config=real / "config.json", tokenizer_dir=real, layers=2)
    other = convert(rand, tmp_path / "random-q8_0.gguf", ConvertOptions(outtype="q8_0")).output
    res, report = run_against(other, base, text_file, tmp_path)
    m = report["metrics"]
    print(
        f"random network: mean KLD {m['mean_kld']:.3g}, same top {m['same_top1']:.1f}%, PPL {m['ppl_test']:.4g} vs "
        f"{m['ppl_ref']:.4g}"
    )
    failed = {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}
    assert res.exit_code == 1, res.output
    assert {f"against BF16: {n}" for n in ("mean KLD", "same top p", "perplexity")} <= set(failed), failed
    assert all("far outside any honest Q8_0 file" in d for d in failed.values()), failed

    q2 = convert(real, tmp_path / "real-q2_k.gguf", ConvertOptions(outtype="q2_k")).output
    res, report = run_against(q2, base, text_file, tmp_path)
    m = report["metrics"]
    print(
        f"real Q2_K: mean KLD {m['mean_kld']:.3g}, same top {m['same_top1']:.1f}%, ln PPL ratio "
        f"{m['ln_ppl_ratio']:+.3g}"
    )
    assert res.exit_code == 0 and not [c for c in report["checks"] if c["status"] == "fail"], res.output
