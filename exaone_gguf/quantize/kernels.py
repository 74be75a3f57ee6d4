"""One entry point for turning float32 rows into the bytes of a ggml tensor type.

Block types go to llama.cpp's own kernels (llama-cpp-python's libggml-base: every type, imatrix). F16/BF16 go
through exaone_gguf.elements, bit-identical to ggml_quantize_chunk's F16/BF16 paths.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from exaone_gguf.elements import f32_to_bf16_bits, f32_to_f16_bits
from exaone_gguf.quantize import ggml_backend
from exaone_gguf.quantize.formats import SUPPORTED_TYPES

T = GGMLQuantizationType
FLOAT_TYPES = frozenset({T.F32, T.F16, T.BF16})


def _float_rows(x: np.ndarray, qtype: T) -> np.ndarray:
    if qtype == T.F32:
        bits = x.view(np.uint32)
    elif qtype == T.F16:
        bits = f32_to_f16_bits(x)
    else:
        bits = f32_to_bf16_bits(x)
    return np.ascontiguousarray(bits).astype(bits.dtype.newbyteorder("<")).view(np.uint8).reshape(x.shape[0], -1)


def quantize(
    x: np.ndarray,
    qtype: GGMLQuantizationType,
    imatrix: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Quantize float32 data whose last axis is the row (ne[0]); returns uint8 [..., row_nbytes].
    `imatrix`: per-column importance weights (ignored by the float types)."""
    qtype = T(qtype)
    if qtype not in SUPPORTED_TYPES:
        raise ValueError(f"quantizing to {qtype.name} is not supported")
    x = np.asarray(x, dtype=np.float32)
    lead = x.shape[:-1] if x.ndim > 1 else ()
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)

    if qtype in FLOAT_TYPES:
        out = _float_rows(np.ascontiguousarray(rows), qtype)
    else:
        out = ggml_backend.quantize_rows(rows, qtype, imatrix=imatrix, threads=threads)
    return out.reshape(*lead, out.shape[-1])
