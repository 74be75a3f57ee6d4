"""Block kernels: ggml's quantizers through our front end, and the F16/BF16 paths equal ggml's byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf import elements
from exaone_gguf.errors import InputError
from exaone_gguf.quantize import formats, ggml_backend, kernels


def test_ggml_library_is_found():
    # llama-cpp-python is a dependency; every comparison below needs its libggml-base.
    assert ggml_backend.available(), "llama-cpp-python's libggml-base was not found"


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.Q6_K, T.IQ4_XS, T.Q3_K, T.F16, T.BF16], ids=lambda t: t.name)
def test_ggml_threads_do_not_change_bytes(qtype):
    x = np.random.default_rng(11).standard_normal((1000, 256)).astype(np.float32)
    one = ggml_backend.quantize_rows(x, qtype, threads=1)
    assert np.array_equal(one, ggml_backend.quantize_rows(x, qtype, threads=2))
    assert np.array_equal(one, ggml_backend.quantize_rows(x, qtype, threads=3))
    imat = np.random.default_rng(12).random(256).astype(np.float32) + 0.1
    if qtype not in kernels.FLOAT_TYPES:
        a = ggml_backend.quantize_rows(x, qtype, imatrix=imat, threads=1)
        assert np.array_equal(a, ggml_backend.quantize_rows(x, qtype, imatrix=imat, threads=3))


def _all_bit_patterns(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2**32, size=(n, 256), dtype=np.uint64).astype(np.uint32).view(np.float32)
    x[0, :8] = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 65504.0, 65520.0]
    x[1, :4] = [1e-8, -6e-8, 3e-5, np.float32(1.0) + np.float32(2**-11)]  # fp16 subnormals and a tie
    return x


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16], ids=lambda t: t.name)
def test_float_types_match_ggml(qtype):
    x = _all_bit_patterns(64)
    assert np.array_equal(kernels.quantize(x, qtype), ggml_backend.quantize_rows(x, qtype))


def test_bf16_rounds_to_nearest_even_not_truncates():
    x = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-8 + 2**-20], np.float32)
    bits = elements.f32_to_bf16_bits(x)
    assert bits.tolist() == [0x3F80, 0x3F82, 0x3F81]
    # truncation would give 0x3F80, 0x3F81, 0x3F80
    assert bits.tolist() != (x.view(np.uint32) >> 16).astype(np.uint16).tolist()


def test_quantize_front_end_shapes():
    x = np.random.default_rng(2).standard_normal((3, 5, 512)).astype(np.float32)
    out = kernels.quantize(x, T.Q4_K)
    assert out.shape == (3, 5, formats.row_nbytes(T.Q4_K, 512))
    assert np.array_equal(out.reshape(15, -1), ggml_backend.quantize_rows(x.reshape(15, 512), T.Q4_K))


def test_imatrix_changes_ggml_output():
    x = np.random.default_rng(4).standard_normal((8, 256)).astype(np.float32)
    imat = np.linspace(0.01, 10, 256).astype(np.float32)
    plain = kernels.quantize(x, T.Q4_K)
    weighted = kernels.quantize(x, T.Q4_K, imatrix=imat)
    assert not np.array_equal(plain, weighted)


def test_bad_inputs_are_rejected():
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="not a multiple"):
        kernels.quantize(x, T.Q8_0)
    with pytest.raises(ValueError, match="not a multiple"):
        kernels.quantize(np.zeros((2, 128), np.float32), T.Q4_K)
    with pytest.raises(ValueError, match="imatrix has"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q4_K, imatrix=np.ones(128, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q4_K, imatrix=np.full(256, np.nan, np.float32))
    with pytest.raises(ValueError, match="not supported"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.IQ2_XXS)


def test_formats_table():
    assert formats.row_nbytes(T.Q4_K, 4096) == 16 * 144
    assert formats.row_nbytes(T.Q6_K, 256) == 210
    assert formats.row_nbytes(T.Q8_0, 64) == 68
    assert formats.row_nbytes(T.BF16, 3) == 6
    with pytest.raises(ValueError):
        formats.row_nbytes(T.Q5_K, 255)
    assert formats.file_type("Q4_K_M").ftype == 15
    assert formats.file_type("q4_k_m").default_type == T.Q4_K
    assert formats.file_type("iq4_xs").default_type == T.IQ4_XS
    assert {ft: int(formats.FILE_TYPES[ft].ftype) for ft in ("f32", "f16", "bf16", "q8_0", "q6_k")} == {
        "f32": 0,
        "f16": 1,
        "bf16": 32,
        "q8_0": 7,
        "q6_k": 18,
    }
    with pytest.raises(InputError, match="q4_k_m"):
        formats.file_type("q4_k_xl")
