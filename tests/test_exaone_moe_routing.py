"""K-EXAONE routing figure (issue 12 item 3) and quantized K-EXAONE validate.

llama.cpp's expert choice per layer is read from its graph (`ffn_moe_topk-{il}`) through the eval callback and
compared with the source reference's choice; validate reports it per layer with the near-tie count. The tiny
k-exaone has a dense layer 0 and MoE layers 1..3 with 8 experts, 2 used per token.
"""

from __future__ import annotations

import ctypes
import json
import re

import numpy as np
import pytest
from gguf_edit import rewrite, swap_experts
from helpers import run_cli

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.families import load_checkpoint
from exaone_gguf.runtime.routes import _Tensor
from exaone_gguf.tiny import make_tiny
from exaone_gguf.validate import validate
from exaone_gguf.validate.routing import NEAR_TIE, agreement, routing_floor

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

ROUTING = "routing: same experts as the reference"
MOE_LAYERS = (1, 2, 3)


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    root = tmp_path_factory.mktemp("kroute")
    ckpt = make_tiny("k-exaone", root / "ckpt")
    files = {
        t: convert(ckpt, root / f"{t}.gguf", ConvertOptions(outtype=t)).output
        for t in ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q2_k")
    }
    return ckpt, files


def check(report, name):
    return next(c for c in report.checks if c.name == name)


def reorder_layer2(src, dst):
    edit = swap_experts(0, 3, 8)
    return rewrite(src, dst, tensors={f"blk.2.ffn_{n}_exps.weight": edit for n in ("gate", "up", "down")})


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_honest_file_routes_as_the_reference(moe, outtype):
    ckpt, files = moe
    report = validate(files[outtype], ckpt)
    c = check(report, ROUTING)
    per = report.metrics["routing"]
    print(f"k-exaone {outtype}: {c.detail}")
    assert c.status == "pass", c.detail
    assert sorted(per) == [str(i) for i in MOE_LAYERS]
    for layer, d in per.items():
        assert d["positions"] == 256, (layer, d)
    # 100 % but near-ties in F32; a BF16 file rounds the router's own weights, which can flip a choice whose margin
    # is just past the near-tie cut: measured 1 of 768 (layer 3, llama-cpp-python 0.3.36), 0 with earlier builds
    flips = sum(d["differ_outside_ties"] for d in per.values())
    assert flips <= (0 if outtype == "f32" else 2), per
    ties = sum(d["near_ties"] for d in per.values())
    assert ties <= 0.02 * 3 * 256  # rare: measured 8 of 768 (layer 3)


def test_experts_reordered_in_one_layer_collapse_the_next_layers_agreement(moe, tmp_path):
    """Layer 2's experts swapped: layer 2 still routes as the source (its input is untouched), layer 3's
    choices part from the source's; a float file fails the routing check."""
    ckpt, files = moe
    report = validate(reorder_layer2(files["f32"], tmp_path / "bad.gguf"), ckpt)
    c = check(report, ROUTING)
    per = report.metrics["routing"]
    print(c.detail)
    assert c.status == "fail" and "layers [3]" in c.detail
    assert per["1"]["agreement_pct"] == 100.0 and per["2"]["agreement_pct"] == 100.0
    assert per["3"]["agreement_pct"] < 90.0  # measured 78.5 % (only experts 0 and 3 trade places)


def test_agreement_counts_near_ties_and_missing_layers():
    top = np.array([[0, 1], [2, 3], [4, 5]])
    margin = np.array([0.5, NEAR_TIE / 2, 0.5])
    got = np.array([[1, 0], [2, 7], [4, 6]])  # same set (order aside), a flip at the tie, a flip outside
    per = agreement({1: (top, margin), 2: (top, margin)}, {1: got})
    assert per[1] == {
        "positions": 3,
        "same": 1,
        "agreement_pct": 33.33,
        "near_ties": 1,
        "differ_outside_ties": 1,
        "overlap_pct": 66.67,  # both experts, then one of two, then one of two
    }
    assert per[2] == {"positions": 3, "missing": True}


def run_validate(path, ckpt, tmp_path, *extra):
    out = tmp_path / f"{path.stem}.json"
    p = run_cli("validate", path, "--reference", ckpt, "--json", out, *extra)
    report = json.loads(out.read_text()) if out.exists() else None
    return p, report


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m", "q2_k"])
def test_quantized_files_pass_validate(moe, outtype, tmp_path):
    ckpt, files = moe
    p, report = run_validate(files[outtype], ckpt, tmp_path, "--structure")  # the forward follows llama.cpp's routes
    failed = [(c["name"], c["detail"]) for c in report["checks"] if c["status"] == "fail"]
    structure = next(c for c in report["checks"] if c["name"].startswith("structure"))
    routing = next(c for c in report["checks"] if c["name"] == ROUTING)
    print(f"k-exaone {outtype}: {structure['detail']}; {routing['status']}: {routing['detail']}")
    assert p.returncode == 0 and not failed, (p.returncode, failed, p.stderr[-500:])


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m"])
@pytest.mark.parametrize("damage", ["experts reordered", "exp_probs_b zeroed"])
def test_broken_quantized_file_fails_the_tensor_check(moe, outtype, damage, tmp_path):
    ckpt, files = moe
    if damage == "experts reordered":
        bad = reorder_layer2(files[outtype], tmp_path / "bad.gguf")
    else:
        zero = {f"blk.{i}.exp_probs_b.bias": np.zeros_like for i in MOE_LAYERS}
        bad = rewrite(files[outtype], tmp_path / "bad.gguf", tensors=zero)
    p, report = run_validate(bad, ckpt, tmp_path)
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert p.returncode != 0 and "tensors: match source" in failed, (p.returncode, failed)


def reverse_experts(raw: np.ndarray) -> np.ndarray:
    """Raw-bytes edit of a 3-D expert tensor: the 8 experts stacked in reverse order."""
    return raw.reshape(8, -1)[::-1].reshape(-1).copy()


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m"])
def test_quantized_file_with_experts_stacked_backwards_fails_the_routing_floor(moe, outtype):
    """Layer 1's experts in reverse order: layers 2 and 3 route on a wrong hidden state and share far fewer
    experts with the reference than any honest file of the type (tiny K-EXAONE: 54-65 % against honest minima of
    97 % at Q8_0, 77 % at Q4_K_M), so the quantized file fails the routing check, not only the tensor check."""
    ckpt, files = moe
    bad = rewrite(
        files[outtype],
        files[outtype].with_name(f"reversed-{outtype}.gguf"),
        tensors={f"blk.1.ffn_{n}_exps.weight": reverse_experts for n in ("gate", "up", "down")},
    )
    report = validate(bad, ckpt)
    c = check(report, ROUTING)
    print(c.detail)
    assert c.status == "fail" and f"the floor for {outtype.upper()}" in c.detail, c.detail
    assert report.metrics["routing"]["1"]["overlap_pct"] >= routing_floor(outtype)  # layer 1's own input is right


def test_f16_file_passes_with_the_plain_16_bit_limits(moe):
    """An f16 K-EXAONE meets the F16 structure limits as they are (its BF16 file, 5.9e-3 rel / 3.6e-4 mean KLD
    over the static BF16 limits, passes within 3x its noise floor: 5.8e-3 / 3.2e-4)."""
    ckpt, files = moe
    report = validate(files["f16"], ckpt)
    structure = check(report, "structure: file weights, source config")
    print(f"k-exaone f16: {structure.detail}")
    assert structure.status == "pass" and report.passed, structure.detail
    assert structure.data["limit"] == {"name": "F16", "max_rel_logit_diff": 5e-3, "max_mean_kld": 2e-4}


class _ShiftedTensor(ctypes.Structure):
    """struct ggml_tensor as a ggml with one more pointer before `ne` would lay it out (a layout change)."""

    _fields_ = [(n, t) for n, t in _Tensor._fields_[:2]] + [("extra", ctypes.c_void_p)] + _Tensor._fields_[2:]


class _ShortName(ctypes.Structure):
    """struct ggml_tensor with two op parameters fewer: `ne` and `nb` read right, the fields after them 8 bytes
    early (one fewer would hide in the padding before `src`)."""

    _fields_ = [(n, ctypes.c_int32 * 14 if n == "op_params" else t) for n, t in _Tensor._fields_]


@pytest.mark.parametrize("mirror", [_ShiftedTensor, _ShortName], ids=["ne shifted", "name shifted"])
def test_a_ggml_tensor_mirror_of_another_layout_fails_loudly(moe, mirror):
    """The routes are read through a ctypes mirror of struct ggml_tensor; with a mirror that does not match the
    loaded ggml, reading them raises an error naming the field, and the routing check fails with it."""
    from exaone_gguf.model import forward
    from exaone_gguf.runtime.logits import Runner
    from exaone_gguf.runtime.routes import llama_routes
    from exaone_gguf.validate.routing import check_routing

    ckpt, files = moe
    with Runner(files["q8_0"], n_ctx=256) as runner:
        tokens = runner.llm.tokenize(b"The routing of a mixture of experts, read from llama.cpp's graph.")
        assert sorted(llama_routes(runner.llm, tokens)) == list(MOE_LAYERS)  # the right mirror reads every layer
        with pytest.raises(RuntimeError, match="ctypes mirror of struct ggml_tensor does not match") as e:
            llama_routes(runner.llm, tokens, mirror=mirror)
    print(e.value)
    assert re.search(r"field '(ne|name|data|nb)'", str(e.value))
    routing: dict = {}
    forward(load_checkpoint(ckpt), tokens, routing=routing)
    c = check_routing(None, routing, "Q8_0", why=str(e.value))
    assert c.status == "fail" and "could not be read" in c.detail and "ggml_tensor" in c.detail
