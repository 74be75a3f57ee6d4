"""NaN / infinity in source weights: found by bit pattern, chunk by chunk, without converting or copying.

A damaged or hostile checkpoint with NaN weights converts "fine" and then produces NaN logits; it is
refused before anything is written unless the user asks to go on (--allow-nonfinite).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from exaone_gguf.checkpoint.safetensors import TensorHandle
from exaone_gguf.errors import InputError

# storage dtype -> (unsigned view, sign-less mask, smallest non-finite pattern: all exponent bits set)
_BITS: dict[str, tuple[type, int, int]] = {
    "BF16": (np.uint16, 0x7FFF, 0x7F80),
    "F16": (np.uint16, 0x7FFF, 0x7C00),
    "F32": (np.uint32, 0x7FFFFFFF, 0x7F800000),
    "F64": (np.uint64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000),
    "F8_E4M3": (np.uint8, 0x7F, 0x7F),  # e4m3fn: no infinity, S.1111.111 is NaN
    "F8_E5M2": (np.uint8, 0x7F, 0x7C),
}
CHUNK_ELEMENTS = 1 << 22  # bounds the one temporary buffer


def all_finite(raw: np.ndarray, dtype: str) -> bool:
    """True when no element of `raw` (the storage array of safetensors `dtype`, or of the ggml type of that
    name) is NaN or +-inf. Integer and quantized types are always taken as finite."""
    spec = _BITS.get(dtype)
    if spec is None:
        return True
    utype, mask, inf = spec
    bits = np.ascontiguousarray(raw).reshape(-1).view(utype)
    buf = np.empty(min(bits.size, CHUNK_ELEMENTS), utype)
    for i in range(0, bits.size, CHUNK_ELEMENTS):
        part = bits[i : i + CHUNK_ELEMENTS]
        out = buf[: part.size]
        np.bitwise_and(part, utype(mask), out=out)
        if out.max() >= inf:
            return False
    return True


def handle_all_finite(h: TensorHandle) -> bool:
    """all_finite over a whole safetensors tensor, row chunk by row chunk."""
    rows = max(1, (CHUNK_ELEMENTS * 4) // max(1, h.row_numel))
    if len(h.shape) <= 1:
        return all_finite(h.raw(), h.dtype)
    try:
        for start in range(0, h.n_rows, rows):
            stop = min(h.n_rows, start + rows)
            if not all_finite(h.raw(start, stop), h.dtype):
                return False
            h.release(start, stop)  # keeps RSS flat on large models
        return True
    finally:
        h.release()


def _sources(handle: Any) -> Iterable[TensorHandle]:
    """The safetensors tensors whose values reach the output: the handle itself, or for a derived
    handle (a quantized layer) its float parts (integer codes cannot be NaN)."""
    if isinstance(handle, TensorHandle):
        yield handle
        return
    yield from (h for h in getattr(handle, "stored", ()) if isinstance(h, TensorHandle))


def check_finite(tensors: dict[str, Any], allow: bool = False) -> list[str]:
    """Names of the tensors holding NaN or infinity. Raises InputError at the first one unless `allow`."""
    found = []
    for name, handle in tensors.items():
        for h in _sources(handle):
            if handle_all_finite(h):
                continue
            if not allow:
                raise InputError(
                    f"{h.file.path}: tensor '{h.name}' contains NaN or infinity; the weights are damaged "
                    "(re-download them), or pass --allow-nonfinite to convert anyway."
                )
            found.append(h.name)
    return found
