"""K-EXAONE bad input: exit 2, one sentence, nothing written, the source untouched."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from test_convert_errors import assert_refused, edit_config, run_convert

from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # torch / transformers


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny("k-exaone-moe-e", tmp_path_factory.mktemp("kerr") / "ckpt")


@pytest.fixture
def src(base, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(base, dst)
    return dst


def digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def edit_weights(src, drop=(), add=None):
    """Rewrite model.safetensors without the tensors named in `drop` (through torch: numpy has no BF16)."""
    from safetensors.torch import load_file as tload
    from safetensors.torch import save_file as tsave

    t = tload(src / "model.safetensors")
    for n in drop:
        del t[n]
    if add:
        t.update(add(t))
    tsave(t, src / "model.safetensors", metadata={"format": "pt"})


def refused(src, tmp_path, *words):
    before = digest(src)
    out = tmp_path / "out.gguf"
    res = run_convert(src, out, "--outtype", "bf16")
    assert_refused(res, out, *words)
    assert res.stderr.strip().count("\n") <= 1  # one sentence (the CLI may frame it)
    assert digest(src) == before


def test_missing_expert_is_named(src, tmp_path):
    edit_weights(src, drop=["model.layers.2.mlp.experts.5.up_proj.weight"])
    refused(src, tmp_path, "model.layers.2.mlp.experts.5.up_proj.weight", "missing")


def test_expert_count_not_matching_config_fewer(src, tmp_path):
    edit_config(src, num_experts=6)
    refused(src, tmp_path, "mlp.gate.weight", "[6, 256]")


def test_expert_count_not_matching_config_more(src, tmp_path):
    edit_config(src, num_experts=10)
    refused(src, tmp_path, "mlp.gate.weight", "[10, 256]")


def test_mtp_tensor_without_its_config_key(src, tmp_path):
    edit_config(src, num_nextn_predict_layers=None)
    refused(src, tmp_path, "unexpected tensor 'mtp.")


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"mlp_layer_types": ["dense", "sparse", "dense", "sparse"]}, ("disagree", "is_moe_layer")),
        ({"is_moe_layer": [False, True, True]}, ("is_moe_layer", "must list 4")),
        ({"is_moe_layer": [True, True, True, True], "first_last_k_dense_replace": 1}, ("first_k_dense_replace",)),
        ({"num_experts_per_tok": 9}, ("num_experts_per_tok",)),
    ],
    ids=["lists-disagree", "list-length", "dense-prefix", "top-k"],
)
def test_inconsistent_moe_layer_lists(src, tmp_path, changes, words):
    edit_config(src, **changes)
    refused(src, tmp_path, *words)
