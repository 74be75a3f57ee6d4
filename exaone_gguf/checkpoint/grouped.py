"""Linear weights stored as integer codes in groups (AWQ, GPTQ, compressed-tensors int): the shared part.

For a Linear W [N, K] (N outputs, K inputs) every format stores codes q, per-group zero points z and scales s:

    W[o, i] = (q[o, i] - z[o, g[i]]) * s[o, g[i]]      g[i] = i // (K / G), or the act-order g_idx[i]

computed in float32 with one multiplication (an integer difference times the stored scale: exact for fp16 / bf16
scales, and the same single rounding llama.cpp's converter and transformers make for float32 ones).

`GroupedTensor` is the lazy `.weight` handle of such a layer (TensorHandle's interface: shape, to_f32, release).
Where a ggml block type holds the codes exactly (contiguous groups of a multiple of 32, fp16 scales) it writes
them as they are (`encode_rows`): Q4_0 (4-bit, z = 8), Q4_1 (4-bit; the minimum -z * s rounded to fp16, see
awq_q4_1) and Q8_0 (q - z within int8); `why_not` says in words why a type cannot.

Packing shared by GPTQ and compressed-tensors (`pack_bits` / `unpack_bits`): 32 / bits values per int32 word,
the first value in the lowest bits.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint.awq_q4_1 import encode_q4_1
from exaone_gguf.checkpoint.block_codes import QK, encode_q4_0, encode_q8_0, fp16_exact


def pack_bits(codes: np.ndarray, bits: int, axis: int = -1) -> np.ndarray:
    """Unsigned codes -> int32 words along `axis` (32 / bits per word, the first in the lowest bits; zero padded)."""
    per = 32 // bits
    c = np.moveaxis(np.asarray(codes, dtype=np.uint32), axis, -1)
    pad = -c.shape[-1] % per
    c = np.concatenate([c, np.zeros((*c.shape[:-1], pad), np.uint32)], axis=-1).reshape(*c.shape[:-1], -1, per)
    words = np.zeros(c.shape[:-1], dtype=np.uint32)
    for j in range(per):
        words |= c[..., j] << np.uint32(bits * j)
    return np.moveaxis(words.view(np.int32), -1, axis)


def unpack_bits(packed: np.ndarray, bits: int, n: int, axis: int = -1) -> np.ndarray:
    """int32 words -> the first `n` uint8 codes along `axis` (the inverse of pack_bits; the mask makes the sign
    of int32 harmless)."""
    w = np.moveaxis(np.ascontiguousarray(packed).view(np.uint32), axis, -1)
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    codes = ((w[..., None] >> shifts) & np.uint32((1 << bits) - 1)).astype(np.uint8)
    return np.moveaxis(codes.reshape(*w.shape[:-1], -1)[..., :n], -1, axis)


def dequantize(codes: np.ndarray, zeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray | None = None) -> np.ndarray:
    """codes [r, K], zeros / scales [r, G] -> W [r, K] float32: (q - z[g]) * s[g], g contiguous or g_idx."""
    r, k = codes.shape
    n_groups = zeros.shape[-1]
    q = codes.astype(np.float32)
    if g_idx is None:
        q = q.reshape(r, n_groups, k // n_groups)
        return ((q - zeros.astype(np.float32)[..., None]) * scales.astype(np.float32)[..., None]).reshape(r, k)
    return (q - zeros.astype(np.float32)[:, g_idx]) * scales.astype(np.float32)[:, g_idx]


class GroupedTensor:
    """The dequantized `P.weight` [N, K] of a group-quantized Linear `P`. Subclasses read the format:
    `_codes(idx)` -> q [r, K] uint8 and `_params(idx)` -> (z [r, G], s [r, G] float32) for output rows `idx`."""

    dtype = "F32"  # exact dequantized values; `raw` and `to_f32` agree
    fmt = "quantized"  # the format's name, for messages

    def __init__(self, prefix: str, shape: tuple[int, int], bits: int, n_groups: int, g_idx, stored, file) -> None:
        self.name, self.shape, self.bits, self.n_groups = prefix + ".weight", shape, bits, n_groups
        self.g_idx = g_idx  # None: groups are contiguous runs of K / G inputs
        self.stored, self.file = stored, file  # the safetensors tensors read

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def row_numel(self) -> int:
        return self.shape[1]

    def _codes(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _params(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def codes(self, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Codes [r, K] (uint8), zeros [r, G] and scales [r, G] (float32) of output rows `rows`."""
        idx = np.arange(self.n_rows)[rows]
        if idx.size == 0:
            return np.zeros((0, self.shape[1]), np.uint8), *(np.zeros((0, self.n_groups), np.float32),) * 2
        return (np.ascontiguousarray(self._codes(idx)), *(np.ascontiguousarray(a) for a in self._params(idx)))

    @cached_property
    def contiguous(self) -> bool:
        """Whether group g is inputs [g K/G, (g+1) K/G) (act-order g_idx that is the identity counts)."""
        k = self.shape[1]
        return self.g_idx is None or np.array_equal(self.g_idx, np.arange(k) // (k // self.n_groups))

    def to_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        q, z, s = self.codes(slice(start, stop))
        return dequantize(q, z, s, None if self.contiguous else self.g_idx)

    def raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.to_f32(start, stop)

    def release(self, start: int = 0, stop: int | None = None) -> None:
        for h in self.stored:
            h.release()

    def why_not(self, qtype) -> str | None:
        """None when rows in `qtype` keep this layer's codes exactly, else the reason in words."""
        name = getattr(qtype, "name", qtype)
        cache = self.__dict__.setdefault("_fates", {})
        if name not in cache:
            cache[name] = self._why_not(name)
        return cache[name]

    def _why_not(self, name: str) -> str:
        if name not in ("Q4_0", "Q4_1", "Q8_0"):
            return f"{name} has no exact form of {self.bits}-bit codes"
        if not self.contiguous:
            return "act-order (g_idx) interleaves the groups"
        if self.shape[1] // self.n_groups % QK:
            return f"groups of {self.shape[1] // self.n_groups} inputs are not whole {QK}-weight blocks"
        z, s = self._params(np.arange(self.n_rows))
        if not fp16_exact(s):
            return "the scales are not fp16 values"
        if name == "Q8_0":
            top, bottom = (1 << self.bits) - 1 - int(z.min()), -int(z.max())  # the range of q - z
            return None if top <= 127 and bottom >= -128 else "q - zero does not fit 8 bits"
        if self.bits != 4:
            return f"{name} holds 4-bit codes, not {self.bits}-bit ones"
        if name == "Q4_0" and not np.all(z == 8):
            return "the zero points are not 8 (asymmetric codes)"
        return None

    def encode_rows(self, qtype, start: int, stop: int, transform: Callable | None = None) -> np.ndarray | None:
        """Rows [start, stop) in `qtype` from the layer's own codes, or None when `qtype` cannot hold them
        exactly (the caller then quantizes the dequantized rows). `transform` may be a row permutation."""
        if self.why_not(qtype) is not None:
            return None
        rows = np.arange(start, stop)
        if transform is not None:
            moved = np.asarray(transform(rows.astype(np.float64)[:, None]))
            if moved.shape != (stop - start, 1) or sorted(moved[:, 0].tolist()) != rows.tolist():
                return None  # not a pure row permutation: codes cannot follow it
            rows = moved[:, 0].astype(np.int64)
        q, z, s = self.codes(rows)
        name = getattr(qtype, "name", qtype)
        if name == "Q4_0":
            return encode_q4_0(q, s)
        if name == "Q4_1":
            return encode_q4_1(q, z, s)
        per = self.shape[1] // self.n_groups
        return encode_q8_0(q.astype(np.int16) - np.repeat(z.astype(np.int16), per, axis=-1), s)
