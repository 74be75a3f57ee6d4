"""AWQ codes kept as they are in ggml Q4_1 blocks.

A Q4_1 block of 32 weights stores `x = q * d + m` (d, m fp16, q 4-bit). Inside one AWQ group (G = 128, a
multiple of 32) AWQ stores `w = (q - z) * s` with the same 4-bit q, so `d = s` (already fp16: exact) and
`m = -z * s`. Only m can be inexact: -z * s may need more than fp16's 11 significant bits, and then every
weight of the block moves by the same fp16 rounding of m. `q4_1_exactness` reports how often and how much.
"""

from __future__ import annotations

import numpy as np

from exaone_gguf.elements import f16_bits_to_f32, f32_to_f16_bits

QK4_1 = 32
BLOCK_BYTES = 4 + QK4_1 // 2  # d (fp16), m (fp16), 16 bytes of nibbles


def _block_params(zeros: np.ndarray, scales: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per Q4_1 block: d = s and the exact minimum -z * s (float64), each [r, K/32]."""
    per_group = k // zeros.shape[-1] // QK4_1  # Q4_1 blocks per AWQ group
    s = np.repeat(scales.astype(np.float64), per_group, axis=-1)
    z = np.repeat(zeros.astype(np.float64), per_group, axis=-1)
    return s, -z * s


def encode_q4_1(codes: np.ndarray, zeros: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """codes [r, K] uint8, zeros [r, K/G] uint8, scales [r, K/G] (fp16 values) -> Q4_1 rows uint8 [r, K/32*20]."""
    r, k = codes.shape
    nb = k // QK4_1
    d, m = _block_params(zeros, scales, k)
    out = np.empty((r, nb, BLOCK_BYTES), dtype=np.uint8)
    out[..., 0:2] = f32_to_f16_bits(d.astype(np.float32)).astype("<u2").view(np.uint8).reshape(r, nb, 2)
    out[..., 2:4] = f32_to_f16_bits(m.astype(np.float32)).astype("<u2").view(np.uint8).reshape(r, nb, 2)
    q = codes.reshape(r, nb, QK4_1)
    out[..., 4:] = q[..., :16] | (q[..., 16:] << 4)  # byte j: weight j low nibble, weight j + 16 high nibble
    return out.reshape(r, nb * BLOCK_BYTES)


def q4_1_exactness(handles) -> dict[str, float | int]:
    """Over AWQ tensors: Q4_1 blocks whose fp16 minimum is inexact, and the largest weight error it causes
    (absolute, and relative to that block's scale)."""
    blocks = inexact = 0
    max_abs = max_rel = 0.0
    for h in handles:
        q, z, s = h.codes(slice(None))
        d, m = _block_params(z, s, h.row_numel)
        m16 = f16_bits_to_f32(f32_to_f16_bits(m.astype(np.float32))).astype(np.float64)
        err = np.abs(m16 - m)
        blocks += err.size
        inexact += int(np.count_nonzero(err))
        if err.size:
            max_abs = max(max_abs, float(err.max()))
            max_rel = max(max_rel, float((err / np.maximum(d, 1e-30)).max()))
    return {
        "blocks": blocks,
        "inexact_min_blocks": inexact,
        "inexact_fraction": inexact / blocks if blocks else 0.0,
        "max_abs_error": max_abs,
        "max_error_in_scales": max_rel,
    }
