"""ctypes binding to llama.cpp's own quantization kernels (libggml-base from llama-cpp-python).

Calling `ggml_quantize_chunk` is what makes our output byte-identical to llama-quantize: it is
the very function llama.cpp's quantizer calls, from the library llama-cpp-python ships. ctypes
drops the GIL during the call, so a plain thread pool over row ranges scales across cores.
Every row is quantized independently (the per-column imatrix is the same for all rows), so the
result does not depend on how rows are split between threads.
"""

from __future__ import annotations

import ctypes
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from exaone_gguf.quantize.formats import SUPPORTED_TYPES, row_nbytes

_LIB_NAMES = ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll")
_F32P = ctypes.POINTER(ctypes.c_float)

# Rows per ggml call when threads > 1: big enough to amortise the call, small enough to balance.
_CHUNK_VALUES = 1 << 16


def _find_library() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for pkg in spec.submodule_search_locations:
        for sub in ("lib", ""):
            for name in _LIB_NAMES:
                p = Path(pkg) / sub / name
                if p.exists():
                    return p
    return None


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL | None:
    path = _find_library()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        _F32P,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        _F32P,
    ]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    return lib


def available() -> bool:
    """True when llama-cpp-python's libggml-base can be loaded."""
    return _lib() is not None


def _require() -> ctypes.CDLL:
    lib = _lib()
    if lib is None:
        raise RuntimeError(
            "llama-cpp-python's libggml-base was not found; install llama-cpp-python (a dependency of exaone-gguf)"
        )
    return lib


def quantize_rows(
    x: np.ndarray, qtype: GGMLQuantizationType, imatrix: np.ndarray | None = None, threads: int = 1
) -> np.ndarray:
    """Quantize float32 rows [nrows, ncols] with ggml; returns uint8 [nrows, row_nbytes].

    `imatrix` is one float32 importance weight per column (or None, ggml's plain path).
    ggml aborts the process on a bad argument, so everything is checked here first.
    """
    lib = _require()
    qtype = GGMLQuantizationType(qtype)
    if qtype not in SUPPORTED_TYPES:
        raise ValueError(f"ggml backend does not support {qtype.name}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {x.shape}")
    nrows, ncols = x.shape
    nbytes = row_nbytes(qtype, ncols)  # raises on partial blocks
    imp = None
    if imatrix is not None:
        imp = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if imp.size != ncols:
            raise ValueError(f"imatrix has {imp.size} values for rows of {ncols}")
        if not np.all(np.isfinite(imp)):
            raise ValueError("imatrix contains non-finite values")
    elif lib.ggml_quantize_requires_imatrix(int(qtype)):
        raise ValueError(f"{qtype.name} requires an importance matrix")
    out = np.empty((nrows, nbytes), dtype=np.uint8)
    if nrows == 0 or ncols == 0:
        return out
    lib.ggml_quantize_init(int(qtype))  # builds IQ lookup tables once, under ggml's own lock

    imp_ptr = imp.ctypes.data_as(_F32P) if imp is not None else None

    def run(r0: int, r1: int) -> None:
        src = x[r0:r1].ctypes.data_as(_F32P)
        dst = ctypes.c_void_p(out.ctypes.data + r0 * nbytes)
        n = lib.ggml_quantize_chunk(int(qtype), src, dst, 0, r1 - r0, ncols, imp_ptr)
        if n != (r1 - r0) * nbytes:
            raise RuntimeError(f"ggml_quantize_chunk wrote {n} bytes, expected {(r1 - r0) * nbytes}")

    threads = max(1, int(threads))
    if threads == 1 or nrows == 1:
        run(0, nrows)
        return out
    step = max(1, _CHUNK_VALUES // ncols)
    ranges = [(r, min(r + step, nrows)) for r in range(0, nrows, step)]
    with ThreadPoolExecutor(max_workers=min(threads, len(ranges))) as pool:
        for f in [pool.submit(run, r0, r1) for r0, r1 in ranges]:
            f.result()
    return out


@cache
def _dequantize_fn(qtype: GGMLQuantizationType):
    """ggml's dequantize_row_<type>(const void *, float *, int64_t k), or None when the library lacks it."""
    lib = _lib()
    fn = getattr(lib, f"dequantize_row_{qtype.name.lower().replace('_k', '_K')}", None) if lib is not None else None
    if fn is not None:
        fn.argtypes = [ctypes.c_void_p, _F32P, ctypes.c_int64]
        fn.restype = None
    return fn


def can_dequantize(qtype: GGMLQuantizationType) -> bool:
    return _dequantize_fn(GGMLQuantizationType(qtype)) is not None


def dequantize_rows(raw: np.ndarray, qtype: GGMLQuantizationType, ncols: int) -> np.ndarray:
    """uint8 rows of a block type -> float32 [nrows, ncols] with llama.cpp's own dequantize_row_* kernels."""
    qtype = GGMLQuantizationType(qtype)
    fn = _dequantize_fn(qtype)
    if fn is None:
        raise ValueError(f"ggml backend cannot dequantize {qtype.name}")
    src = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    nbytes = row_nbytes(qtype, ncols)
    if src.size % nbytes:
        raise ValueError(f"{src.size} bytes are not whole {qtype.name} rows of {ncols} values")
    out = np.empty((src.size // nbytes, ncols), dtype=np.float32)
    if out.size:
        fn(src.ctypes.data, out.ctypes.data_as(_F32P), out.size)
    return out


# The type llama.cpp's CPU backend converts activations to before a product with weights of each type
# (ggml-cpu's type_traits_cpu[type].vec_dot_type).
VEC_DOT_TYPE = {
    **{t: GGMLQuantizationType.Q8_0 for t in ("Q8_0", "Q4_0", "Q5_0", "IQ4_NL")},
    **{t: GGMLQuantizationType.Q8_1 for t in ("Q4_1", "Q5_1")},
    **{t: GGMLQuantizationType.Q8_K for t in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")},
}


def round_activations(x: np.ndarray, weight_type: GGMLQuantizationType) -> np.ndarray | None:
    """Activations x [rows, n] as llama.cpp's CPU backend feeds them to a product with `weight_type` weights:
    quantized to Q8_0 / Q8_1 / Q8_K with ggml's reference kernels and dequantized back (float32), or None when
    that type is not rounded here (float weights, or no library)."""
    target = VEC_DOT_TYPE.get(GGMLQuantizationType(weight_type).name)
    lib = _lib()
    if target is None or lib is None:
        return None
    x = np.ascontiguousarray(x, dtype=np.float32)
    block = 256 if target == GGMLQuantizationType.Q8_K else 32
    if x.shape[-1] % block:
        return None
    if target == GGMLQuantizationType.Q8_1:  # Q8_1 dequantizes like Q8_0: d * q (its s field feeds the offset)
        target_q, name = GGMLQuantizationType.Q8_1, "q8_1"
    else:
        target_q, name = target, target.name.lower().replace("_k", "_K")
    quant = getattr(lib, f"quantize_row_{name}_ref")
    quant.argtypes = [_F32P, ctypes.c_void_p, ctypes.c_int64]
    quant.restype = None
    nb = x.size // block
    bytes_per_block = {GGMLQuantizationType.Q8_0: 34, GGMLQuantizationType.Q8_1: 36, GGMLQuantizationType.Q8_K: 292}[
        target_q
    ]
    buf = np.empty(nb * bytes_per_block, dtype=np.uint8)
    quant(x.ctypes.data_as(_F32P), buf.ctypes.data, x.size)
    blocks = buf.reshape(nb, bytes_per_block)
    if target_q == GGMLQuantizationType.Q8_K:
        d = blocks[:, :4].copy().view("<f4").astype(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    else:
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)
        q = blocks[:, bytes_per_block - 32 :].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(x.shape)
