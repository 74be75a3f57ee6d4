"""Integer codes of a quantized checkpoint kept as they are in ggml Q4_0 / Q8_0 blocks (Q4_1: awq_q4_1).

A block of 32 weights inside one source group (group sizes a multiple of 32, groups contiguous) with
`w = (q - z) * s`:
  Q4_0  x = (q4 - 8) * d:   4-bit codes with z = 8 (symmetric): q4 = q, d = s
  Q8_0  x = q8 * d:         q8 = q - z when it fits int8 (any 4-bit code; 8-bit symmetric, z = 128), d = s
Both are exact when s is an fp16 value (`fp16_exact`); ggml multiplies an integer by d in float32, exactly.
"""

from __future__ import annotations

import numpy as np

from exaone_gguf.elements import f16_bits_to_f32, f32_to_f16_bits

QK = 32


def fp16_exact(s: np.ndarray) -> bool:
    """Whether every value of `s` is an fp16 value (so a block's fp16 d holds it as it is)."""
    s = np.asarray(s, dtype=np.float32)
    return bool(np.array_equal(f16_bits_to_f32(f32_to_f16_bits(s)), s))


def _d_bytes(scales: np.ndarray, k: int) -> np.ndarray:
    """Per-block fp16 scale bytes [r, K/32, 2] from per-group scales [r, G]."""
    r = scales.shape[0]
    d = np.repeat(np.asarray(scales, dtype=np.float32), k // scales.shape[-1] // QK, axis=-1)
    return f32_to_f16_bits(d).astype("<u2").view(np.uint8).reshape(r, k // QK, 2)


def encode_q4_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """codes [r, K] (0..15, zero point 8), scales [r, G] (fp16 values) -> Q4_0 rows uint8 [r, K/32*18]."""
    r, k = codes.shape
    out = np.empty((r, k // QK, 18), dtype=np.uint8)
    out[..., :2] = _d_bytes(scales, k)
    q = codes.astype(np.uint8).reshape(r, k // QK, QK)
    out[..., 2:] = q[..., :16] | (q[..., 16:] << 4)  # byte j: weight j low nibble, weight j + 16 high nibble
    return out.reshape(r, -1)


def decode_q4_0(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 rows -> (codes uint8 [r, K], block scales float32 [r, K/32])."""
    b = rows.reshape(rows.shape[0], k // QK, 18)
    qs = b[..., 2:]
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1).reshape(-1, k), f16_bits_to_f32(b[..., :2].copy().view("<u2"))[
        ..., 0
    ]


def encode_q8_0(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """values [r, K] (q - z, within int8), scales [r, G] (fp16 values) -> Q8_0 rows uint8 [r, K/32*34]."""
    r, k = values.shape
    out = np.empty((r, k // QK, 34), dtype=np.uint8)
    out[..., :2] = _d_bytes(scales, k)
    out[..., 2:] = values.astype(np.int8).view(np.uint8).reshape(r, k // QK, QK)
    return out.reshape(r, -1)


def decode_q8_0(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 rows -> (int8 values [r, K], block scales float32 [r, K/32])."""
    b = rows.reshape(rows.shape[0], k // QK, 34)
    return b[..., 2:].copy().view(np.int8).reshape(-1, k), f16_bits_to_f32(b[..., :2].copy().view("<u2"))[..., 0]
