"""float32 -> fp16 bit patterns, as ggml writes them: a base module every layer may use.

Interim home (issue 11): the fp16 encoder moved here out of quantize/kernels.py so that checkpoint/awq_q4_1.py
no longer imports the quantize layer. The element-conversion work of the same issue gathers every f32 <->
f16/bf16 conversion in exaone_gguf/elements.py; once that lands, this module goes and its users import from there.
"""

from __future__ import annotations

import numpy as np


def fp32_to_fp16_bits(x: np.ndarray) -> np.ndarray:
    """GGML_FP32_TO_FP16 (round to nearest even, overflow -> inf, NaN -> sign|0x7E00)."""
    v = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = v.astype(np.float16).view(np.uint16)
    nan = np.isnan(v)
    if nan.any():
        sign = (v.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
        h = np.where(nan, sign | np.uint16(0x7E00), h)
    return h
