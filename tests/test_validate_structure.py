"""Structure separated from rounding (issue 14): at every bit width the validator passes an honest file and fails a
broken one through the CLI, with the tensor, metadata or structure check naming the cause.

A quantized file gets the structure check (the numpy forward on its own weights) with --structure; without it, a
wrong computation key is named by the metadata checks (against config.json, and against the keys of the source's
float conversion that llama.cpp runs for the fidelity figures).

Tiny models of each family at the tests' sizes and at another width and seed, quantized to Q2_K, Q4_K_M and Q8_0.
Each checkpoint and each file is built once per session; the broken files are edits of the honest ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_edit import rewrite
from typer.testing import CliRunner

from exaone_gguf.cli import app
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.kernels import quantize

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

FAMILIES = ("exaone3", "exaone3.5", "exaone4", "exaone4-hybrid", "llama")
TYPES = ("q2_k", "q4_k_m", "q8_0")
# the tests' sizes, and another width with another seed (make-tiny --hidden 512 --seed 1; the hybrid's 64 layers
# stay, at hidden 256)
SIZES = {"tests": {}, "wide": {"hidden": 512, "seed": 1}}
WIDE_HYBRID = {"hidden": 256, "seed": 1}
MAX_TOKENS = "128"  # past the hybrid's 8-token window many times over; half the default keeps each run short


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """model(family, outtype, size="tests") -> (checkpoint dir, GGUF path), each built once per session."""
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.tiny import make_tiny

    root = tmp_path_factory.mktemp("structure")
    ckpts: dict[tuple, Path] = {}
    files: dict[tuple, Path] = {}

    def get(family: str, outtype: str, size: str = "tests") -> tuple[Path, Path]:
        if (family, size) not in ckpts:
            sizes = WIDE_HYBRID if (size == "wide" and family == "exaone4-hybrid") else SIZES[size]
            ckpts[family, size] = make_tiny(family, root / f"{family}-{size}", **sizes)
        if (family, outtype, size) not in files:
            files[family, outtype, size] = convert(
                ckpts[family, size], root / f"{family}-{size}-{outtype}.gguf", ConvertOptions(outtype=outtype)
            ).output
        return ckpts[family, size], files[family, outtype, size]

    return get


def run_cli(gguf: Path, ckpt: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    """`exaone-gguf validate GGUF --reference CKPT --json ...` in process; (exit code, JSON report)."""
    report = tmp_path / f"{gguf.stem}.json"
    res = CliRunner().invoke(
        app,
        ["validate", str(gguf), "--reference", str(ckpt), "--max-tokens", MAX_TOKENS, "--json", str(report), *extra],
    )
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, json.loads(report.read_text())


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def failed(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if c["status"] == "fail"}


TENSORS, STRUCTURE = "tensors: match source", "structure: file weights, source config"
GRAPH_KEYS, HPARAMS = "metadata: graph keys as the source's float conversion", "metadata: hyperparameters"
# Each defect at Q2_K (the coarsest type, where fidelity alone cannot tell) for every family, and at the other two
# types for one family each: every (defect, family) and (defect, type) pair, at a third of the full matrix's cost.
DEFECT_CASES = {
    defect: [(f, "q2_k") for f in FAMILIES] + [(other, "q4_k_m"), (other, "q8_0")]
    for defect, other in (("swap", "exaone3"), ("scale", "exaone4"), ("rope", "llama"))
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("outtype", TYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_honest_quantized_file_passes(family, outtype, size, model, tmp_path):
    ckpt, gguf = model(family, outtype, size)
    code, report = run_cli(gguf, ckpt, tmp_path, "--structure")
    s = check(report, STRUCTURE)
    print(
        f"{family} {outtype} {size}: structure {s['data']['rel_logit_diff']:.3g} rel, "
        f"KLD {s['data']['mean_kld']:.3g}; fidelity KLD {report['metrics']['mean_kld']:.3g}"
    )
    assert code == 0, [(c["name"], c["detail"]) for c in report["checks"] if c["status"] == "fail"]
    t = check(report, TENSORS)
    assert t["status"] == "pass" and all(v["identical"] for v in t["data"]["tensors"]), t["detail"]
    assert "identical to a fresh quantization of the source" in t["detail"]
    assert s["status"] == "pass"
    assert check(report, GRAPH_KEYS)["status"] == "pass", check(report, GRAPH_KEYS)["detail"]


def test_without_structure_a_quantized_file_gets_no_forward_of_its_own_weights(model, tmp_path):
    ckpt, gguf = model("exaone4", "q4_k_m")
    code, report = run_cli(gguf, ckpt, tmp_path)
    names = {c["name"] for c in report["checks"]}
    assert code == 0 and STRUCTURE not in names and GRAPH_KEYS in names


def _requantize_scaled(f, name: str, factor: float):
    """Raw bytes of tensor `name` dequantized, scaled by `factor` and quantized again to its own type."""
    info = f.tensor(name)
    rows = f.rows_f32(info) * np.float32(factor)
    return lambda raw: quantize(rows, GGMLQuantizationType(info.tensor_type)).reshape(-1)


@pytest.mark.parametrize("family,outtype", DEFECT_CASES["swap"])
def test_ffn_gate_and_up_swapped_fails_the_tensor_check(family, outtype, model, tmp_path):
    ckpt, gguf = model(family, outtype)
    bad = rewrite(gguf, tmp_path / "swapped.gguf", swap=("blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"))
    code, report = run_cli(bad, ckpt, tmp_path)
    t = check(report, TENSORS)
    print(t["detail"])
    assert code == 1 and t["status"] == "fail"
    assert "blk.1.ffn_gate.weight" in t["detail"] and "blk.1.ffn_up.weight" in t["detail"]
    assert not {n for n in failed(report) if n.startswith("metadata")}  # names, shapes and keys are all right


@pytest.mark.parametrize("family,outtype", DEFECT_CASES["scale"])
def test_one_tensor_scaled_by_two_percent_fails_the_tensor_check(family, outtype, model, tmp_path):
    ckpt, gguf = model(family, outtype)
    name = "blk.2.attn_v.weight"
    with read_gguf(gguf) as f:
        edit = _requantize_scaled(f, name, 1.02)
    bad = rewrite(gguf, tmp_path / "scaled.gguf", tensors={name: edit})
    code, report = run_cli(bad, ckpt, tmp_path)
    t = check(report, TENSORS)
    print(t["detail"])
    assert code == 1 and t["status"] == "fail" and name in t["detail"]
    assert [v["name"] for v in t["data"]["tensors"] if not v["ok"]] == [name]


@pytest.mark.parametrize("family,outtype", DEFECT_CASES["rope"])
def test_rope_base_changed_fails_the_metadata_and_structure_checks(family, outtype, model, tmp_path):
    ckpt, gguf = model(family, outtype)
    with read_gguf(gguf) as f:
        arch = f.get("general.architecture")
        key = f"{arch}.rope.freq_base"
        base = f.get(key)
    # 10000, Llama's default, the value a converter falls back to when it misses the config's rope_theta
    bad = rewrite(gguf, tmp_path / "rope.gguf", kv={key: 10000.0 if base != 10000.0 else 1e6})
    code, report = run_cli(bad, ckpt, tmp_path, "--structure")
    s = check(report, STRUCTURE)
    print(s["detail"])
    assert code == 1 and s["status"] == "fail"
    for name in (HPARAMS, GRAPH_KEYS):  # named without the forward too
        assert check(report, name)["status"] == "fail" and key in check(report, name)["detail"]
    assert check(report, TENSORS)["status"] == "pass"  # every tensor is right: only the computation differs


@pytest.mark.parametrize("outtype", TYPES)
def test_sliding_window_changed_fails_the_metadata_and_structure_checks(outtype, model, tmp_path):
    ckpt, gguf = model("exaone4-hybrid", outtype)
    key = "exaone4.attention.sliding_window"
    bad = rewrite(gguf, tmp_path / "window.gguf", kv={key: 16})
    code, report = run_cli(bad, ckpt, tmp_path, "--structure")
    s = check(report, STRUCTURE)
    print(s["detail"])
    assert code == 1 and s["status"] == "fail"
    assert check(report, "metadata: sliding window")["status"] == "fail"
    assert check(report, GRAPH_KEYS)["status"] == "fail" and key in check(report, GRAPH_KEYS)["detail"]
    assert check(report, TENSORS)["status"] == "pass"


def test_a_graph_key_only_in_the_file_is_named(model, tmp_path):
    """A key the source's conversion does not have (here llama.cpp's linear RoPE scaling, which config.json does
    not ask for and no other metadata check reads) is named: llama.cpp would run it, nothing compared it."""
    ckpt, gguf = model("llama", "q4_k_m")
    extra = {
        "llama.rope.scaling.type": (GGUFValueType.STRING, "linear"),
        "llama.rope.scaling.factor": (GGUFValueType.FLOAT32, 4.0),
    }
    bad = rewrite(gguf, tmp_path / "scaled.gguf", kv=extra)
    code, report = run_cli(bad, ckpt, tmp_path)
    g = check(report, GRAPH_KEYS)
    print(g["detail"])
    assert g["status"] == "fail" and code == 1 and all(k in g["detail"] for k in extra)
    assert {c["name"] for c in report["checks"] if c["status"] == "fail" and c["name"].startswith("metadata")} == {
        GRAPH_KEYS
    }


def test_fidelity_below_thresholds_is_a_warning_unless_gated(model, tmp_path):
    # the tiny Llama at Q2_K: an honest file whose fidelity misses the Q2_K thresholds (mean KLD ~5.6 > 4)
    ckpt, gguf = model("llama", "q2_k")
    code, report = run_cli(gguf, ckpt, tmp_path)
    assert code == 0 and check(report, "logits: mean kld")["status"] == "warn"
    code, report = run_cli(gguf, ckpt, tmp_path, "--quality-gate")
    assert code == 1 and "logits: mean kld" in failed(report)
    assert all(name.startswith("logits: ") for name in failed(report))  # only fidelity: the file itself is right


def test_imatrix_file_is_identical_with_its_imatrix_and_within_band_without(model, tmp_path):
    from test_quant_imatrix import write_gguf_imatrix

    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.validate import validate

    ckpt, f32 = model("exaone4", "f32")
    rng = np.random.default_rng(3)
    with read_gguf(f32) as f:
        stats = {
            t.name: ((rng.random(t.shape[0]) * 50 + 0.5).astype(np.float32), 100.0)
            for t in f.tensors
            if len(t.shape) == 2
        }
    imatrix = tmp_path / "imatrix.gguf"
    write_gguf_imatrix(imatrix, stats)
    gguf = convert(ckpt, tmp_path / "im-q4_k_m.gguf", ConvertOptions(outtype="q4_k_m", imatrix=imatrix)).output

    exact = check(validate(gguf, ckpt, max_tokens=128, imatrix=imatrix).to_dict(), TENSORS)
    assert exact["status"] == "pass" and all(v["identical"] for v in exact["data"]["tensors"]), exact["detail"]

    report = validate(gguf, ckpt, max_tokens=128).to_dict()
    banded = check(report, TENSORS)
    print(banded["detail"])
    worst = max(v["error_ratio"] for v in banded["data"]["tensors"] if v.get("differ"))
    print(f"worst error / fresh error without the imatrix: {worst:.3f}")
    assert banded["status"] == "pass" and "pass --imatrix" in banded["detail"]
    assert not all(v["identical"] for v in banded["data"]["tensors"])
