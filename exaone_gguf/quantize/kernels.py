"""One entry point for turning float32 rows into the bytes of a ggml tensor type.

Block types go to llama.cpp's own kernels when llama-cpp-python is installed (fast, every type,
imatrix) and to our numpy reference otherwise; both give the same bytes. F16/BF16 go through
exaone_gguf.elements, bit-identical to ggml_quantize_chunk's F16/BF16 paths.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from exaone_gguf.elements import f32_to_bf16_bits, f32_to_f16_bits
from exaone_gguf.quantize import ggml_backend, numpy_kernels
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
    backend: str = "auto",
) -> np.ndarray:
    """Quantize float32 data whose last axis is the row (ne[0]); returns uint8 [..., row_nbytes].

    backend: "auto" (ggml when available, else numpy), "ggml" or "numpy".
    `imatrix`: per-column importance weights (ggml backend only; ignored by the float types).
    """
    qtype = T(qtype)
    if backend not in ("auto", "ggml", "numpy"):
        raise ValueError(f"unknown backend {backend!r}")
    if qtype not in SUPPORTED_TYPES:
        raise ValueError(f"quantizing to {qtype.name} is not supported")
    x = np.asarray(x, dtype=np.float32)
    lead = x.shape[:-1] if x.ndim > 1 else ()
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)

    if qtype in FLOAT_TYPES:
        out = _float_rows(np.ascontiguousarray(rows), qtype)
    else:
        use_ggml = backend == "ggml" or (backend == "auto" and ggml_backend.available())
        if backend == "auto" and not use_ggml and (imatrix is not None or qtype not in numpy_kernels.SUPPORTED):
            raise RuntimeError(
                f"quantizing to {qtype.name}{' with an imatrix' if imatrix is not None else ''} "
                "needs llama-cpp-python (its ggml library was not found)"
            )
        if use_ggml:
            out = ggml_backend.quantize_rows(rows, qtype, imatrix=imatrix, threads=threads)
        else:
            if imatrix is not None:
                raise ValueError("the numpy backend does not implement imatrix quantization")
            out = numpy_kernels.quantize_rows(rows, qtype)
    return out.reshape(*lead, out.shape[-1])
