"""Element conversions f32 <-> f16 / bf16, bit for bit as ggml does them (numpy only; the base of every layer).

ggml-base's scalar conversions are the reference (ggml-impl.h, as built into llama-cpp-python's libggml-base,
which `ggml_quantize_chunk` and every `quantize_row_*_ref` use):

- f32 -> f16 (`ggml_compute_fp32_to_fp16`, used by `ggml_fp32_to_fp16_row`): IEEE round to nearest even,
  overflow -> inf, subnormals kept; every NaN becomes sign | 0x7E00 (the payload is dropped).
  numpy's float16 cast rounds the same way but keeps the NaN payload, so NaNs are rewritten.
- f32 -> bf16 (`ggml_compute_fp32_to_bf16`): round to nearest even on the bit pattern (overflow -> inf);
  a NaN keeps its top 16 bits with the quiet bit forced (bits >> 16 | 64).
- f16 -> f32 (`ggml_compute_fp16_to_fp32`): exact; a NaN keeps its payload and comes out quiet (the
  float multiply inside ggml quiets a signalling NaN), which numpy's cast does not do.
- bf16 -> f32: the 16 bits shifted up, exactly (signalling NaNs stay signalling).

ggml-cpu's F16C path (`_cvtss_sh`) keeps NaN payloads instead; it serves compute kernels, not the bytes
ggml-base writes into a file, so it is not the reference here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bf16_bits_to_f32", "f16_bits_to_f32", "f32_to_bf16_bits", "f32_to_f16_bits"]

_F16_QNAN = np.uint16(0x7E00)
_F16_SIGN = np.uint16(0x8000)
_F32_QUIET = np.uint32(0x00400000)


def _has_nan(x: np.ndarray) -> bool:
    """Whether float32 `x` holds a NaN: a max propagates NaN and is a SIMD reduction (~20x cheaper than the
    f16 cast it guards), so the NaN mask is only built for the rare array that needs it."""
    return x.size > 0 and bool(np.isnan(np.max(x)))


def f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
    """float32 values -> IEEE f16 bit patterns (uint16, same shape), equal to ggml_fp32_to_fp16_row."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    if _has_nan(x):
        nan = np.isnan(x)
        h[nan] = (h[nan] & _F16_SIGN) | _F16_QNAN
    return h


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 values -> bf16 bit patterns (uint16, same shape), equal to ggml_fp32_to_bf16_row."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # (u + 0x7FFF + lsb) >> 16 in uint32: it can only wrap for u >= 0xFFFF8000, which is a NaN (fixed below)
    r = u >> np.uint32(16)
    r &= np.uint32(1)
    r += u
    r += np.uint32(0x7FFF)
    r >>= np.uint32(16)
    out = r.astype(np.uint16)
    if _has_nan(u.view(np.float32)):
        nan = np.isnan(u.view(np.float32))
        out[nan] = (u[nan] >> np.uint32(16)).astype(np.uint16) | np.uint16(64)
    return out


def f16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """f16 bit patterns (any 2-byte array in native order: uint16 or float16) -> float32, as ggml_fp16_to_fp32_row."""
    x = np.asarray(bits).view(np.float16).astype(np.float32)
    if _has_nan(x):
        nan = np.isnan(x)
        x.view(np.uint32)[nan] |= _F32_QUIET
    return x


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) -> float32, exactly (ggml_bf16_to_fp32_row)."""
    bits = np.asarray(bits).view(np.uint16)
    out = np.empty(bits.shape, dtype=np.uint32)
    np.left_shift(bits, 16, out=out, dtype=np.uint32)  # widen and shift in one pass: 8x faster than astype + <<
    return out.view(np.float32)


def _f8_e4m3_table() -> np.ndarray:
    """The 256 float32 values of float8 e4m3fn (OCP FP8: bias 7, no infinity, S.1111.111 is NaN)."""
    b = np.arange(256)
    exp, man = (b >> 3) & 0xF, (b & 7).astype(np.float64)
    mag = np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * 2.0 ** (exp - 7))
    mag = np.where((b & 0x7F) == 0x7F, np.nan, mag)
    return np.where(b & 0x80, -mag, mag).astype(np.float32)


F8_TABLES = {
    "F8_E4M3": _f8_e4m3_table(),
    "F8_E5M2": f16_bits_to_f32(np.arange(256, dtype=np.uint16) << 8),  # e5m2 is the high byte of an f16
}


def f8_bits_to_f32(bits: np.ndarray, dtype: str) -> np.ndarray:
    """float8 bytes (safetensors dtype F8_E4M3 or F8_E5M2) -> float32, exactly."""
    return F8_TABLES[dtype][np.asarray(bits).view(np.uint8)]
