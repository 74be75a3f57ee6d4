"""validate on K-EXAONE: honest files pass; each broken file fails on the matching check."""

from __future__ import annotations

import numpy as np
import pytest
from gguf_edit import rewrite, swap_experts

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.tiny import make_tiny
from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

A = "exaone-moe"


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    root = tmp_path_factory.mktemp("kval")
    ckpt = make_tiny("k-exaone", root / "ckpt")
    files = {t: convert(ckpt, root / f"{t}.gguf", ConvertOptions(outtype=t)).output for t in ("f32", "bf16")}
    return ckpt, files


def failed(report) -> set[str]:
    return {c.name for c in report.checks if c.status == "fail"}


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_honest_files_pass(moe, outtype):
    ckpt, files = moe
    report = validate(files[outtype], ckpt)
    print(f"k-exaone {outtype}: {report.metrics['mean_kld']:.2e} KLD, {report.metrics['same_top1']:.1f}% top-1")
    assert report.passed, [(c.name, c.detail) for c in report.checks if c.status == "fail"]


def test_experts_reordered_in_one_layer(moe, tmp_path):
    ckpt, files = moe
    edit = swap_experts(0, 3, 8)
    bad = rewrite(
        files["f32"],
        tmp_path / "bad.gguf",
        tensors={f"blk.2.ffn_{n}_exps.weight": edit for n in ("gate", "up", "down")},
    )
    report = validate(bad, ckpt)
    assert "metadata: tensors" not in failed(report)  # names and shapes are right: the logits tell
    assert "tensors: match source" in failed(report)  # the file's tensors are not the source's; fidelity only warns


def test_exp_probs_b_missing(moe, tmp_path):
    ckpt, files = moe
    bad = rewrite(files["f32"], tmp_path / "bad.gguf", drop_tensors=("blk.2.exp_probs_b.bias",))
    assert "metadata: tensors" in failed(validate(bad, ckpt))


def test_exp_probs_b_zeroed(moe, tmp_path):
    ckpt, files = moe
    bad = rewrite(
        files["f32"], tmp_path / "bad.gguf", tensors={f"blk.{i}.exp_probs_b.bias": np.zeros_like for i in (1, 2, 3)}
    )
    report = validate(bad, ckpt)
    assert "tensors: match source" in failed(report)  # the file's tensors are not the source's; fidelity only warns


@pytest.mark.parametrize(
    "key, value",
    [
        ("expert_gating_func", 1),  # softmax
        ("expert_weights_scale", 1.0),
        ("leading_dense_block_count", 0),
        ("nextn_predict_layers", 0),
    ],
)
def test_moe_key_wrong(moe, tmp_path, key, value):
    ckpt, files = moe
    bad = rewrite(files["f32"], tmp_path / "bad.gguf", kv={f"{A}.{key}": value})
    report = validate(bad, ckpt)
    detail = next(c.detail for c in report.checks if c.name == "metadata: hyperparameters")
    assert "metadata: hyperparameters" in failed(report) and f"{A}.{key}" in detail
