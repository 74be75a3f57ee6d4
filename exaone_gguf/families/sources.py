"""Tensor-table forms beyond one-to-one, as lazy row sources with the TensorHandle interface.

- `Stacked`: N source tensors of one shape -> one tensor [N, *shape] (MoE experts -> `ffn_*_exps`).
- `Sliced`: indices [start, stop) along one axis of a source tensor (a fused `gate_up_proj` split in two).

Both read only the rows asked for, from the source handles' memory maps: a read of rows [a, b) touches
the parts of at most the experts those rows lie in and converts only those rows to float32, so
convert/pipeline.py's `stream_tensor` keeps memory at one chunk whatever the stack's size.

Rows: a source serves "flat" rows of its last axis (shape[-1] numbers each, n_rows = prod(shape[:-1])), so a
stacked [E, I, H] tensor streams in pieces of one H-row, never whole experts. to_f32/raw return [rows, shape[-1]].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from exaone_gguf.elements import bf16_bits_to_f32 as bf16_to_f32
from exaone_gguf.errors import InputError


def _flat_rows(h: Any) -> int:
    return math.prod(h.shape[:-1]) if len(h.shape) > 1 else 1


def _read(h: Any, lo: int, hi: int, f32: bool) -> np.ndarray:
    """Flat rows [lo, hi) of handle `h` (rows of its last axis) as [hi - lo, shape[-1]]; only those rows are
    converted (the handle's own rows are read as a zero-copy view of the mapped file)."""
    last = h.shape[-1] if h.shape else 1
    if len(h.shape) <= 1:
        return np.asarray(h.to_f32() if f32 else h.raw()).reshape(1, last)[lo:hi]
    per = _flat_rows(h) // h.n_rows  # flat rows in one of the handle's own rows
    r0, r1 = lo // per, -(-hi // per)
    a, b = lo - r0 * per, hi - r0 * per
    if f32 and h.dtype not in ("BF16", "F16", "F32", "F64"):
        return h.to_f32(r0, r1).reshape(-1, last)[a:b]
    rows = np.asarray(h.raw(r0, r1)).reshape(-1, last)[a:b]
    if not f32:
        return rows
    return bf16_to_f32(rows) if h.dtype == "BF16" else rows.astype(np.float32)


def _release(h: Any, lo: int, hi: int) -> None:
    if len(h.shape) <= 1:
        h.release()
        return
    per = _flat_rows(h) // h.n_rows
    h.release(lo // per, -(-hi // per))


class _Composed:
    """Rows gathered from segments of source handles; subclasses say which (`segments`)."""

    shape: tuple[int, ...]
    dtype: str
    name: str

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1]) if len(self.shape) > 1 else 1

    @property
    def row_numel(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes for h in self._handles())

    def segments(self, start: int, stop: int) -> list[tuple[Any, int, int, slice]]:
        raise NotImplementedError

    def _handles(self) -> list[Any]:
        raise NotImplementedError

    def _gather(self, start: int, stop: int | None, f32: bool) -> np.ndarray:
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        parts = [_read(h, lo, hi, f32)[:, cols] for h, lo, hi, cols in self.segments(start, stop)]
        if not parts:
            return np.zeros((0, self.row_numel), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def to_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 [rows, shape[-1]] (a fresh array)."""
        return np.ascontiguousarray(self._gather(start, stop, True), dtype=np.float32)

    def raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) in the sources' storage dtype (a copy)."""
        return np.ascontiguousarray(self._gather(start, stop, False))

    def release(self, start: int = 0, stop: int | None = None) -> None:
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        for h, lo, hi, _ in self.segments(start, stop):
            _release(h, lo, hi)

    @property
    def file(self):  # for messages
        return self._handles()[0].file


@dataclass(frozen=True)
class Stacked:
    """N source tensors, each `part_shape`, as one tensor [N, *part_shape]."""

    names: tuple[str, ...]
    part_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.names), *self.part_shape)

    def sources(self) -> dict[str, tuple[int, ...]]:
        return {n: self.part_shape for n in self.names}

    def open(self, tensors: Mapping[str, Any]) -> "StackedSource":
        return StackedSource(self, [tensors[n] for n in self.names])


class StackedSource(_Composed):
    def __init__(self, spec: Stacked, parts: list[Any]) -> None:
        dtypes = {p.dtype for p in parts}
        if len(dtypes) != 1:
            raise InputError(
                f"{parts[0].file.path}: tensors {spec.names[0]} ... {spec.names[-1]} are stacked into one tensor "
                f"but have different dtypes ({', '.join(sorted(dtypes))}); the checkpoint is inconsistent."
            )
        self.parts, self.shape, self.dtype, self.name = parts, spec.shape, dtypes.pop(), spec.names[0]
        self.per = math.prod(spec.part_shape[:-1]) if len(spec.part_shape) > 1 else 1  # flat rows per part

    def _handles(self) -> list[Any]:
        return self.parts

    def segments(self, start: int, stop: int) -> list[tuple[Any, int, int, slice]]:
        out, r = [], start
        while r < stop:
            e, lo = divmod(r, self.per)
            hi = min(self.per, lo + stop - r)
            out.append((self.parts[e], lo, hi, slice(None)))
            r += hi - lo
        return out


@dataclass(frozen=True)
class Sliced:
    """Indices [start, stop) along `axis` of the source tensor `name` of `shape`."""

    name: str
    source_shape: tuple[int, ...]
    axis: int
    start: int
    stop: int

    def __post_init__(self) -> None:
        n = len(self.source_shape)
        if not -n <= self.axis < n or not 0 <= self.start < self.stop <= self.source_shape[self.axis]:
            raise ValueError(f"slice [{self.start}:{self.stop}] on axis {self.axis} does not fit {self.source_shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        s = list(self.source_shape)
        s[self.axis] = self.stop - self.start
        return tuple(s)

    def sources(self) -> dict[str, tuple[int, ...]]:
        return {self.name: self.source_shape}

    def open(self, tensors: Mapping[str, Any]) -> "SlicedSource":
        return SlicedSource(self, tensors[self.name])


class SlicedSource(_Composed):
    def __init__(self, spec: Sliced, src: Any) -> None:
        self.src, self.spec, self.shape, self.dtype, self.name = src, spec, spec.shape, src.dtype, spec.name
        s, ax = spec.source_shape, spec.axis % len(spec.source_shape)
        self.last_axis = ax == len(s) - 1
        # rows: [outer, along, inner] over the source's flat rows (inner: flat rows per index of `axis`)
        self.inner = math.prod(s[ax + 1 : -1]) if not self.last_axis else 1
        self.along = s[ax] if not self.last_axis else 1

    def _handles(self) -> list[Any]:
        return [self.src]

    def segments(self, start: int, stop: int) -> list[tuple[Any, int, int, slice]]:
        sp = self.spec
        if self.last_axis:  # same rows, some columns
            return [(self.src, start, stop, slice(sp.start, sp.stop))] if stop > start else []
        width = (sp.stop - sp.start) * self.inner  # flat rows of the slice per outer index
        out, r = [], start
        while r < stop:
            o, j = divmod(r, width)
            n = min(width - j, stop - r)
            lo = o * self.along * self.inner + sp.start * self.inner + j
            out.append((self.src, lo, lo + n, slice(None)))
            r += n
        return out
