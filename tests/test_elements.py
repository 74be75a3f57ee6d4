"""The one f32 <-> f16/bf16 module equals ggml-base's row conversions bit for bit, NaN payloads included,
and every writer of F16/BF16 bytes (convert, quantize, the AWQ Q4_1 scales) goes through it."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf import elements
from exaone_gguf.convert.pipeline import _table16, convert_rows
from exaone_gguf.quantize import ggml_backend, kernels

_ROW_FUNCS = ("ggml_fp32_to_fp16_row", "ggml_fp32_to_bf16_row", "ggml_fp16_to_fp32_row", "ggml_bf16_to_fp32_row")


@pytest.fixture(scope="module")
def ggml():
    """llama-cpp-python's libggml-base, with its four element-conversion row functions."""
    path = ggml_backend._find_library()
    assert path is not None, "llama-cpp-python's libggml-base was not found"
    lib = ctypes.CDLL(str(path))
    for name in _ROW_FUNCS:
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
    return lib


def _call(lib, name: str, x: np.ndarray, out_dtype) -> np.ndarray:
    x = np.ascontiguousarray(x)
    out = np.empty(x.size, out_dtype)
    getattr(lib, name)(x.ctypes.data, out.ctypes.data, x.size)
    return out


def _special_values() -> np.ndarray:
    """NaNs (payloads, signs, signalling), infinities, f32 and f16 subnormals, f16 overflow and exact ties."""
    nan_bits = [
        0x7FC00000,
        0xFFC00000,
        0x7F800001,
        0xFF800001,
        0x7FFFFFFF,
        0xFFFFFFFF,
        0x7FA5A5A5,
        0xFFD00001,
        0x7F802000,
        0x7F801FFF,
        0xFFFF8000,
        0xFFFF7FFF,
        0x7FFF8000,
    ]
    values = [
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1.17e-38,
        -5.9e-39,  # f32 subnormals
        6.0e-8,
        5.96e-8,
        2.98e-8,
        2.9802322e-08,
        -3e-5,
        6.1e-5,  # f16 subnormal range and its edge
        65504.0,
        -65504.0,
        65519.996,
        65520.0,
        -65520.0,
        1e5,
        3.4028235e38,
        -3.4028235e38,
    ]
    # f16 ties: exactly halfway between two neighbours, both parities, normal and subnormal
    ties = [
        1.0 + 2.0**-11,
        1.0 + 3 * 2.0**-11,
        -(1.0 + 5 * 2.0**-11),
        2048.0 + 1.0,
        2048.0 + 3.0,
        2.0**-25,
        3 * 2.0**-25,
        -(5 * 2.0**-25),
        2.0**-24 + 2.0**-25,
        65504.0 + 16.0,
    ]
    # bf16 ties: low 16 bits exactly 0x8000 with an even and an odd upper half, up to the overflow edge
    bf16_ties = [0x3F808000, 0x3F818000, 0xBF808000, 0x00008000, 0x00018000, 0x7F7F8000, 0xFF7F8000, 0x7F7FFFFF]
    x = np.array(values + ties, np.float32)
    return np.concatenate([np.array(nan_bits + bf16_ties, np.uint32).view(np.float32), x])


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(11)
    every_pattern = rng.integers(0, 1 << 32, size=1 << 21, dtype=np.uint64).astype(np.uint32).view(np.float32)
    normal = (rng.standard_normal(1 << 16) * rng.choice([1e-6, 0.02, 1.0, 3e4], 1 << 16)).astype(np.float32)
    return np.concatenate([_special_values(), every_pattern, normal])


def test_inputs_cover_the_hard_cases():
    x = _inputs()
    u = x.view(np.uint32)
    assert np.isnan(x).sum() > 1000 and np.isinf(x).sum() >= 2
    assert len(np.unique(u[np.isnan(x)])) > 1000  # many payloads, both signs
    assert ((u & 0x7F800000) == 0).sum() > 100  # f32 subnormals
    with np.errstate(over="ignore"):
        assert np.isinf(x[np.isfinite(x)].astype(np.float16)).sum() > 1000  # finite values that overflow f16


def test_f16_encoder_equals_ggml(ggml):
    x = _inputs()
    assert np.array_equal(elements.f32_to_f16_bits(x), _call(ggml, "ggml_fp32_to_fp16_row", x, np.uint16))


def test_bf16_encoder_equals_ggml(ggml):
    x = _inputs()
    assert np.array_equal(elements.f32_to_bf16_bits(x), _call(ggml, "ggml_fp32_to_bf16_row", x, np.uint16))


def test_numpy_cast_is_not_ggml_on_nan(ggml):
    # What convert_rows did before: numpy's cast keeps NaN payloads, ggml writes sign|0x7E00.
    x = _special_values()
    with np.errstate(invalid="ignore", over="ignore"):
        cast = x.astype(np.float16).view(np.uint16)
    assert not np.array_equal(cast, _call(ggml, "ggml_fp32_to_fp16_row", x, np.uint16))


@pytest.mark.parametrize(
    ("encode", "decode", "ggml_name"),
    [
        (elements.f32_to_f16_bits, elements.f16_bits_to_f32, "ggml_fp16_to_fp32_row"),
        (elements.f32_to_bf16_bits, elements.bf16_bits_to_f32, "ggml_bf16_to_fp32_row"),
    ],
    ids=["f16", "bf16"],
)
def test_decoders_equal_ggml_on_every_pattern(ggml, encode, decode, ggml_name):
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = decode(bits).view(np.uint32)
    assert np.array_equal(got, _call(ggml, ggml_name, bits, np.float32).view(np.uint32))
    finite = np.isfinite(decode(bits))
    assert np.array_equal(encode(decode(bits))[finite], bits[finite])  # finite values round-trip exactly


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_convert_and_quantize_write_the_same_bytes(ggml, qtype):
    x = _inputs()[: 1 << 16].reshape(64, -1)
    name = "ggml_fp32_to_fp16_row" if qtype == T.F16 else "ggml_fp32_to_bf16_row"
    want = _call(ggml, name, x, np.uint16).view(np.uint8).reshape(64, -1)
    assert np.array_equal(np.asarray(convert_rows(x, qtype)).view(np.uint8).reshape(64, -1), want)
    assert np.array_equal(kernels.quantize(x, qtype), want)


@pytest.mark.parametrize(("src", "qtype"), [("F16", T.BF16), ("BF16", T.F16)], ids=["f16-to-bf16", "bf16-to-f16"])
def test_16bit_lookup_tables_equal_ggml(ggml, src, qtype):
    bits = np.arange(1 << 16, dtype=np.uint16)
    x = _call(ggml, "ggml_fp16_to_fp32_row" if src == "F16" else "ggml_bf16_to_fp32_row", bits, np.float32)
    name = "ggml_fp32_to_fp16_row" if qtype == T.F16 else "ggml_fp32_to_bf16_row"
    assert np.array_equal(np.asarray(_table16(src, qtype)).view(np.uint16), _call(ggml, name, x, np.uint16))
