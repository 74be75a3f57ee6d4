"""A strict, mmap-based safetensors reader that hands out lazy tensor handles.

BF16 stays raw uint16 and float8 raw uint8 (numpy has neither); nothing is read until a handle is asked for rows.
Every header field is checked before it is trusted (the checks of the reference Rust loader).
"""

from __future__ import annotations

import json
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exaone_gguf.elements import F8_TABLES, bf16_bits_to_f32, f8_bits_to_f32, f16_bits_to_f32
from exaone_gguf.errors import InputError

MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype -> numpy storage dtype (BF16 kept as its raw 16-bit pattern)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
    "F8_E4M3": np.dtype("u1"),  # float8 kept as its raw byte (numpy has no float8)
    "F8_E5M2": np.dtype("u1"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorHandle:
    """A tensor inside a safetensors file; nothing is read until rows() or to_f32() is called."""

    name: str
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]
    file: "SafetensorsFile"
    begin: int  # absolute offset of the first byte in the file
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_numel(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else (self.shape[0] if self.shape else 1)

    def raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) in storage dtype (a read-only view of the mmap), shape (rows, *shape[1:])."""
        dt = DTYPES[self.dtype]
        if len(self.shape) <= 1:
            return np.frombuffer(self.file.mmap, dt, math.prod(self.shape), self.begin).reshape(self.shape)
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        begin, nbytes = self.byte_range(start, stop)
        arr = np.frombuffer(self.file.mmap, dt, nbytes // dt.itemsize, begin)
        return arr.reshape((stop - start, *self.shape[1:]))

    def byte_range(self, start: int = 0, stop: int | None = None) -> tuple[int, int]:
        """(absolute file offset, byte count) of rows [start, stop): for copying bytes without reading them."""
        if len(self.shape) <= 1:
            return self.begin, self.nbytes
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        row_bytes = self.row_numel * DTYPES[self.dtype].itemsize
        return self.begin + start * row_bytes, (stop - start) * row_bytes

    def to_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 (a fresh array)."""
        raw = self.raw(start, stop)
        if self.dtype == "BF16":
            return bf16_bits_to_f32(raw)
        if self.dtype == "F16":
            return f16_bits_to_f32(raw)
        if self.dtype in F8_TABLES:
            return f8_bits_to_f32(raw, self.dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise InputError(f"{self.file.path}: tensor '{self.name}' has dtype {self.dtype}, not a float type.")
        return raw.astype(np.float32)

    def release(self, start: int = 0, stop: int | None = None) -> None:
        """Tell the kernel the mapped pages of rows [start, stop) (default: all) may be dropped from this
        process (keeps RSS flat on large models; the page cache keeps them, so a later read is cheap)."""
        self.file.release(*self.byte_range(start, stop))


class SafetensorsFile:
    """One .safetensors file: a validated header and an mmap of the whole file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise InputError(f"{self.path}: file not found; the checkpoint is incomplete.") from None
        except OSError as e:
            raise InputError(f"{self.path}: cannot be opened ({e.strerror}).") from None
        try:
            size = os.fstat(fd).st_size
            self.tensors = self._read_header(fd, size)
            self.mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""
        finally:
            os.close(fd)

    def _fail(self, what: str) -> InputError:
        return InputError(f"{self.path}: {what}; the safetensors file is corrupt, re-download it.")

    def _read_header(self, fd: int, size: int) -> dict[str, TensorHandle]:
        if size < 8:
            raise self._fail(f"file is {size} bytes, too short for a header")
        n = int.from_bytes(os.pread(fd, 8, 0), "little")
        if n > MAX_HEADER_BYTES:
            raise self._fail(f"header length {n} exceeds the 100 MB limit")
        if 8 + n > size:
            raise self._fail(f"header length {n} runs past the end of the file ({size} bytes)")
        raw = os.pread(fd, n, 8)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise self._fail(f"header is not valid UTF-8 JSON ({type(e).__name__})") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        data_start, data_size = 8 + n, size - 8 - n
        spans: list[tuple[int, int, str]] = []
        tensors: dict[str, TensorHandle] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict):
                raise self._fail(f"entry for tensor '{name}' is not an object")
            dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if dtype not in DTYPES:
                raise self._fail(f"tensor '{name}' has unknown dtype {dtype!r}")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise self._fail(f"tensor '{name}' has an invalid shape {shape!r}")
            if (
                not isinstance(offs, list)
                or len(offs) != 2
                or not all(type(o) is int and o >= 0 for o in offs)
                or offs[0] > offs[1]
            ):
                raise self._fail(f"tensor '{name}' has invalid data_offsets {offs!r}")
            if offs[1] > data_size:
                raise self._fail(f"tensor '{name}' data ends at {offs[1]}, past the {data_size}-byte data section")
            want = math.prod(shape) * DTYPES[dtype].itemsize  # Python ints: no overflow
            if want != offs[1] - offs[0]:
                raise self._fail(
                    f"tensor '{name}' has {offs[1] - offs[0]} bytes but dtype {dtype} x shape {shape} needs {want}"
                )
            spans.append((offs[0], offs[1], name))
            tensors[name] = TensorHandle(name, dtype, tuple(shape), self, data_start + offs[0], want)
        pos = 0
        for begin, end, name in sorted(spans):
            if begin != pos:
                kind = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
                raise self._fail(f"tensor '{name}' {kind}")
            pos = end
        if pos != data_size:
            raise self._fail(f"tensors cover {pos} of {data_size} data bytes")
        return tensors

    def release(self, begin: int, nbytes: int) -> None:
        if isinstance(self.mmap, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            page = mmap.PAGESIZE
            start = begin // page * page
            try:
                self.mmap.madvise(mmap.MADV_DONTNEED, start, begin + nbytes - start)
            except (OSError, ValueError):
                pass
