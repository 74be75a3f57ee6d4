"""RoPE frequencies, shared by the converter (rope_freqs tensor) and the numpy reference forward pass."""

from __future__ import annotations

import math

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec


def base_inv_freq(spec: ModelSpec) -> np.ndarray:
    """inv_freq[j] = 1 / theta^(2j/D), j < D/2, in float64."""
    d = spec.head_dim
    return 1.0 / (spec.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))


def llama3_divisors(spec: ModelSpec) -> np.ndarray | None:
    """Per-frequency divisors of llama3 scaling (llama.cpp's `rope_freqs` tensor), or None without scaling.

    Scaled inv_freq = base inv_freq / divisor: 1 for short wavelengths, `factor` for long ones, a smooth
    blend in between (transformers' _compute_llama3_parameters).
    """
    rs = spec.rope_scaling
    if rs is None:
        return None
    old_ctx = rs.original_max_position_embeddings
    low_wavelen = old_ctx / rs.low_freq_factor
    high_wavelen = old_ctx / rs.high_freq_factor
    out = []
    for freq in base_inv_freq(spec):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(rs.factor)
        else:
            smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
            out.append(1.0 / ((1 - smooth) / rs.factor + smooth))
    return np.asarray(out, dtype=np.float32)


def inv_freq(spec: ModelSpec) -> np.ndarray:
    """The inverse frequencies the model actually rotates with (scaling applied), float64."""
    f = base_inv_freq(spec)
    div = llama3_divisors(spec)
    return f if div is None else f / div.astype(np.float64)
