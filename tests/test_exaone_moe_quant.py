"""K-EXAONE quantization: convert --outtype T and quantize give the bytes and types of llama_model_quantize
from the same BF16 file (llama.cpp's MoE mixture rules: 8 experts bump attn_v / attn_k / attn_output, ffn_down's
layer is its block number, ffn_gate_inp and exp_probs_b stay as they are), per-expert and fused sources."""

from __future__ import annotations

import numpy as np
import pytest
from test_exaone_moe import fuse_experts
from test_quant_imatrix import llama_quantize_with_imatrix, write_gguf_imatrix
from test_quant_mixtures import llama_quantize
from test_quantize_e2e import TYPES, tensors

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.from_gguf import quantize_gguf
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.imatrix import load_imatrix
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # converts and quantizes of tiny models


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    root = tmp_path_factory.mktemp("kq")
    ckpt = make_tiny("k-exaone", root / "ckpt")
    bf16 = convert(ckpt, root / "bf16.gguf", ConvertOptions(outtype="bf16")).output
    return ckpt, fuse_experts(ckpt, root / "fused"), bf16


def moe_imatrix(gguf_path, out, seed=1):
    """Per-column importance; 3-D expert tensors get one vector per expert (ne[0] * n_expert values)."""
    rng = np.random.default_rng(seed)
    stats = {}
    for t in read_gguf(gguf_path).tensors:
        if len(t.shape) >= 2 and t.name.endswith("weight"):
            n = t.shape[0] * (t.shape[2] if len(t.shape) > 2 else 1)
            stats[t.name] = ((rng.random(n) * 50 + 0.5).astype(np.float32), float(rng.integers(10, 500)))
    write_gguf_imatrix(out, stats)
    return out


@pytest.mark.parametrize("outtype", TYPES)
def test_same_bytes_as_llama_model_quantize(moe, outtype, tmp_path):
    ckpt, fused, bf16 = moe
    imatrix = moe_imatrix(bf16, tmp_path / "imatrix.gguf") if outtype == "iq4_xs" else None
    ref = tmp_path / "llama.gguf"
    if imatrix:
        assert llama_quantize_with_imatrix(bf16, ref, outtype, load_imatrix(imatrix)) == 0
    else:
        llama_quantize(bf16, ref, outtype)
    want, want_ft = tensors(ref)
    outs = [quantize_gguf(bf16, tmp_path / "q.gguf", outtype, threads=2, imatrix=imatrix).output]
    for src, name in ((ckpt, "c.gguf"), (fused, "f.gguf")):
        outs.append(convert(src, tmp_path / name, ConvertOptions(outtype=outtype, threads=1, imatrix=imatrix)).output)
    for path in outs:
        got, ft = tensors(path)
        assert ft == want_ft
        assert set(got) == set(want)
        for name, (qtype, raw) in want.items():
            assert got[name][0] == qtype, f"{path.name} {name}: {got[name][0].name} vs llama.cpp {qtype.name}"
            assert got[name][1] == raw, f"{path.name} {name} ({qtype.name}): bytes differ from llama.cpp"
    assert want["blk.1.ffn_gate_inp.weight"][0].name == "F32" and want["blk.1.exp_probs_b.bias"][0].name == "F32"
