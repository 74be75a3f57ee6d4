"""EXAONE 4.5 text files: convert --outtype T and quantize give the bytes and types of llama_model_quantize from
the same BF16 file, for every type we support, the MTP block (blk.64, nextn tensors) included."""

from __future__ import annotations

import pytest
from test_quant_imatrix import llama_quantize_with_imatrix
from test_quant_mixtures import llama_quantize
from test_quantize_e2e import TYPES, make_imatrix, tensors

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.from_gguf import quantize_gguf
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.quantize.imatrix import load_imatrix
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # converts and quantizes of tiny models


@pytest.fixture(scope="module")
def e45(tmp_path_factory):
    root = tmp_path_factory.mktemp("e45q")
    ckpt = make_tiny("exaone4.5", root / "ckpt")
    return ckpt, convert(ckpt, root / "bf16.gguf", ConvertOptions(outtype="bf16")).output


@pytest.mark.parametrize("outtype", TYPES)
def test_same_bytes_as_llama_model_quantize(e45, outtype, tmp_path):
    ckpt, bf16 = e45
    imatrix = make_imatrix(bf16, tmp_path / "imatrix.gguf") if outtype == "iq4_xs" else None
    ref = tmp_path / "llama.gguf"
    if imatrix:
        assert llama_quantize_with_imatrix(bf16, ref, outtype, load_imatrix(imatrix)) == 0
    else:
        llama_quantize(bf16, ref, outtype)
    want, want_ft = tensors(ref)
    assert "blk.64.nextn.eh_proj.weight" in want and "blk.64.ffn_down.weight" in want
    outs = [
        quantize_gguf(bf16, tmp_path / "q.gguf", outtype, threads=2, imatrix=imatrix).output,
        convert(ckpt, tmp_path / "c.gguf", ConvertOptions(outtype=outtype, threads=1, imatrix=imatrix)).output,
    ]
    for path in outs:
        got, ft = tensors(path)
        assert ft == want_ft
        assert set(got) == set(want)
        for name, (qtype, raw) in want.items():
            assert got[name][0] == qtype, f"{path.name} {name}: {got[name][0].name} vs llama.cpp {qtype.name}"
            assert got[name][1] == raw, f"{path.name} {name} ({qtype.name}): bytes differ from llama.cpp"
