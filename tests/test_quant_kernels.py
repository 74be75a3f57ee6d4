"""Block kernels: our numpy quantizers and the F16/BF16 paths equal llama.cpp's ggml byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf import elements
from exaone_gguf.errors import InputError
from exaone_gguf.quantize import formats, ggml_backend, kernels, numpy_kernels


def test_ggml_library_is_found():
    # llama-cpp-python is a dependency; every comparison below needs its libggml-base.
    assert ggml_backend.available(), "llama-cpp-python's libggml-base was not found"


def _hard_rows(ncols: int, seed: int) -> np.ndarray:
    """Rows that exercise every branch: zeros, constants, ties, huge/tiny/subnormal, mixed scales."""
    rng = np.random.default_rng(seed)
    n = ncols
    normal = lambda: rng.standard_normal(n).astype(np.float32)  # noqa: E731
    rows = [
        normal(),
        np.zeros(n, np.float32),
        np.full(n, 0.75, np.float32),
        np.full(n, -3.25, np.float32),
        normal() * np.float32(3e4),  # huge (fp16 scales near overflow)
        normal() * np.float32(1e-30),  # tiny
        normal() * np.float32(1e-41),  # subnormal: 1/d overflows to inf
        np.abs(normal()) + np.float32(5),  # all positive, min > 0
        -np.abs(normal()),  # all negative
        (rng.integers(-20, 20, n) / 2).astype(np.float32),  # exact .5 ties everywhere
        rng.integers(-3, 3, n).astype(np.float32),
        (rng.integers(0, 16, n) * 0.125 - 1).astype(np.float32),
        rng.standard_cauchy(n).astype(np.float32),  # heavy tails
        normal() * (np.float32(10.0) ** rng.integers(-12, 4, max(1, n // 16)).repeat(16)[:n]).astype(np.float32),
    ]
    signed_zeros = normal()
    signed_zeros[rng.random(n) < 0.5] = 0.0
    signed_zeros[rng.random(n) < 0.3] = -0.0
    rows.append(signed_zeros)
    few_outliers = np.full(n, -1.5, np.float32)
    few_outliers[rng.integers(0, n, 3)] = 40.0
    rows.append(few_outliers)
    return np.stack(rows)


NUMPY_TYPES = sorted(numpy_kernels.SUPPORTED, key=int)


CASES = [(t, n) for t in NUMPY_TYPES for n in (32, 256, 4096) if n % formats.block_size(t) == 0]


@pytest.mark.parametrize(("qtype", "ncols"), CASES, ids=[f"{t.name}-{n}" for t, n in CASES])
def test_numpy_matches_ggml(qtype, ncols):
    x = _hard_rows(ncols, seed=ncols)
    ours = numpy_kernels.quantize_rows(x, qtype)
    ref = ggml_backend.quantize_rows(x, qtype)
    bad = np.nonzero((ours != ref).any(axis=1))[0]
    assert ours.shape == (x.shape[0], formats.row_nbytes(qtype, ncols))
    assert bad.size == 0, f"{qtype.name}: rows {bad.tolist()} differ from ggml"


@pytest.mark.parametrize("qtype", NUMPY_TYPES, ids=lambda t: t.name)
def test_numpy_matches_ggml_random_matrix(qtype):
    x = np.random.default_rng(7).standard_normal((96, 2048)).astype(np.float32)
    assert np.array_equal(numpy_kernels.quantize_rows(x, qtype), ggml_backend.quantize_rows(x, qtype))


def test_comparison_sees_a_one_ulp_change():
    # The byte comparison above is only meaningful if the bytes react to the data.
    x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    y = x.copy()
    i = np.argmax(np.abs(y[0]))
    y[0, i] = np.nextafter(y[0, i], np.float32(np.inf) * np.sign(y[0, i]), dtype=np.float32) * np.float32(1.01)
    assert not np.array_equal(numpy_kernels.quantize_rows(y, T.Q8_0), ggml_backend.quantize_rows(x, T.Q8_0))


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


@pytest.mark.parametrize("backend", ["auto", "ggml", "numpy"])
def test_quantize_front_end_shapes_and_backends(backend):
    x = np.random.default_rng(2).standard_normal((3, 5, 512)).astype(np.float32)
    out = kernels.quantize(x, T.Q4_K, backend=backend)
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
        kernels.quantize(np.zeros((2, 128), np.float32), T.Q4_K, backend="numpy")
    with pytest.raises(ValueError, match="imatrix has"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q4_K, imatrix=np.ones(128, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q4_K, imatrix=np.full(256, np.nan, np.float32))
    with pytest.raises(ValueError, match="numpy backend"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q4_K, imatrix=np.ones(256, np.float32), backend="numpy")
    with pytest.raises(ValueError, match="numpy backend does not implement"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q3_K, backend="numpy")
    with pytest.raises(ValueError, match="not supported"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.IQ2_XXS)
    with pytest.raises(ValueError, match="backend"):
        kernels.quantize(np.zeros((2, 256), np.float32), T.Q8_0, backend="cuda")


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
