"""convert --outtype T and quantize IN OUT T write what llama.cpp's own quantizer writes, tensor for tensor.

For every tiny family and type: llama_model_quantize (llama-cpp-python) quantizes our BF16 GGUF; our one-pass
convert from the checkpoint and our GGUF->GGUF quantize must give the same type and the same bytes for every
tensor. IQ4_XS runs with an importance matrix made for the test, passed to both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_FAMILIES
from test_quant_imatrix import llama_quantize_with_imatrix, write_gguf_imatrix
from test_quant_mixtures import llama_quantize

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.from_gguf import quantize_gguf
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.imatrix import load_imatrix

pytestmark = pytest.mark.slow  # converts and quantizes of tiny models

TYPES = [
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q2_k",
    "q3_k_m",
    "q4_k_s",
    "q4_k_m",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
    "iq4_xs",
]


def tensors(path):
    f = read_gguf(path)
    return {t.name: (t.tensor_type, bytes(f.tensor_bytes(t))) for t in f.tensors}, f.get("general.file_type")


def make_imatrix(gguf_path, out, seed=1):
    rng = np.random.default_rng(seed)
    stats = {}
    for t in read_gguf(gguf_path).tensors:
        if len(t.shape) == 2:
            stats[t.name] = ((rng.random(t.shape[0]) * 50 + 0.5).astype(np.float32), float(rng.integers(10, 500)))
    write_gguf_imatrix(out, stats)
    return out


@pytest.mark.parametrize("outtype", TYPES)
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_same_bytes_as_llama_model_quantize(family, outtype, tiny_dir, tiny_gguf, tmp_path):
    bf16 = tiny_gguf(family, "bf16")
    imatrix = make_imatrix(bf16, tmp_path / "imatrix.gguf") if outtype == "iq4_xs" else None
    ref = tmp_path / "llama.gguf"
    if imatrix:
        assert llama_quantize_with_imatrix(bf16, ref, outtype, load_imatrix(imatrix)) == 0
    else:
        llama_quantize(bf16, ref, outtype)
    want, want_ft = tensors(ref)

    ours_q = quantize_gguf(bf16, tmp_path / "q.gguf", outtype, threads=2, imatrix=imatrix).output
    ours_c = convert(
        tiny_dir(family), tmp_path / "c.gguf", ConvertOptions(outtype=outtype, threads=1, imatrix=imatrix)
    ).output
    for path in (ours_q, ours_c):
        got, ft = tensors(path)
        assert ft == want_ft
        assert set(got) == set(want)  # llama.cpp reorders tensors; the order in a file carries no meaning
        for name, (qtype, raw) in want.items():
            assert got[name][0] == qtype, f"{name}: {got[name][0].name} vs llama.cpp {qtype.name}"
            assert got[name][1] == raw, f"{name} ({qtype.name}): bytes differ from llama.cpp"
    # the mixture really mixes: K-quant files keep norms F32 and, for *_m types, promote some layers
    types = {q.name for q, _ in want.values()}
    assert "F32" in types


@pytest.mark.parametrize("outtype", ["q4_0", "q4_k_m"])
def test_requantize_matches_llama_model_quantize(outtype, tiny_gguf, tmp_path):
    # A Q8_0 input is dequantized row by row (GGUFFile.rows_f32) and quantized again, as llama.cpp's
    # allow_requantize does; refused without the flag.
    import ctypes

    import llama_cpp

    from exaone_gguf.errors import InputError
    from exaone_gguf.quantize.mixtures import file_type_value

    q8 = tiny_gguf("exaone4", "q8_0")
    with pytest.raises(InputError, match="is already quantized .*--allow-requantize"):
        quantize_gguf(q8, tmp_path / "refused.gguf", outtype)
    assert not (tmp_path / "refused.gguf").exists()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = file_type_value(outtype), 2, True
    ref = tmp_path / "llama.gguf"
    assert llama_cpp.llama_model_quantize(str(q8).encode(), str(ref).encode(), ctypes.byref(params)) == 0
    want, want_ft = tensors(ref)
    got, ft = tensors(quantize_gguf(q8, tmp_path / "q.gguf", outtype, threads=2, allow_requantize=True).output)
    assert ft == want_ft and set(got) == set(want)
    for name, (qtype, raw) in want.items():
        assert got[name] == (qtype, raw), f"{name}: {got[name][0].name} vs llama.cpp {qtype.name}, or other bytes"
