"""A streaming, atomic GGUF v3 writer.

All tensor sizes are known before any data is produced, so the header, metadata and tensor table are written
first and tensor bytes are then streamed chunk by chunk: memory stays at one chunk, whatever the model size.
The file is written as OUT.partial, fsynced and renamed; on any failure the partial file is removed.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from exaone_gguf.errors import InputError

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

_SCALAR_FMT = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_ARRAY_DTYPE = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def encode_value(vtype: GGUFValueType, value: Any, sub: GGUFValueType | None = None) -> bytes:
    if vtype == GGUFValueType.STRING:
        return _string(value)
    if vtype == GGUFValueType.ARRAY:
        assert sub is not None
        head = struct.pack("<IQ", int(sub), len(value))
        if sub == GGUFValueType.STRING:
            return head + b"".join(_string(v) for v in value)
        return head + np.asarray(value, dtype=_ARRAY_DTYPE[sub]).tobytes()
    return struct.pack(_SCALAR_FMT[vtype], value)


def tensor_nbytes(qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor whose GGUF shape (ne order) is `shape`."""
    block, size = GGML_QUANT_SIZES[qtype]
    if shape[0] % block:
        raise ValueError(f"row length {shape[0]} is not a multiple of the {qtype.name} block size {block}")
    n = 1
    for d in shape[1:]:
        n *= d
    return n * (shape[0] // block) * size


@dataclass(frozen=True)
class FileSpan:
    """`nbytes` bytes at `offset` of the file `path`, to be copied verbatim: the kernel copies them
    (copy_file_range), so they never pass through this process's memory."""

    path: Path
    offset: int
    nbytes: int


Chunk = bytes | np.ndarray | FileSpan


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # GGUF ne order: ne[0] is the row length
    qtype: GGMLQuantizationType
    produce: Callable[[], Iterable[Chunk]]  # yields the tensor's bytes in order
    nbytes: int = 0
    offset: int = 0  # relative to the start of the data section


@dataclass
class GGUFPlan:
    """Everything that goes into one GGUF file, before any byte is written."""

    kv: dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]] = field(default_factory=dict)
    tensors: list[PlannedTensor] = field(default_factory=list)

    def add(self, key: str, vtype: GGUFValueType, value: Any, sub: GGUFValueType | None = None) -> None:
        if key in self.kv:
            raise ValueError(f"duplicate GGUF key {key}")
        self.kv[key] = (vtype, value, sub)

    def add_string(self, key: str, value: str) -> None:
        self.add(key, GGUFValueType.STRING, value)

    def add_u32(self, key: str, value: int) -> None:
        self.add(key, GGUFValueType.UINT32, int(value))

    def add_f32(self, key: str, value: float) -> None:
        self.add(key, GGUFValueType.FLOAT32, float(value))

    def add_bool(self, key: str, value: bool) -> None:
        self.add(key, GGUFValueType.BOOL, bool(value))

    def add_array(self, key: str, sub: GGUFValueType, values: Any) -> None:
        self.add(key, GGUFValueType.ARRAY, values, sub)

    def add_tensor(self, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType, produce) -> None:
        if any(t.name == name for t in self.tensors):
            raise ValueError(f"duplicate tensor {name}")
        self.tensors.append(PlannedTensor(name, tuple(shape), qtype, produce, tensor_nbytes(qtype, tuple(shape))))

    def header_bytes(self) -> bytes:
        parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))]
        for key, (vtype, value, sub) in self.kv.items():
            parts += [_string(key), struct.pack("<I", int(vtype)), encode_value(vtype, value, sub)]
        offset = 0
        for t in self.tensors:
            t.offset = offset
            parts += [_string(t.name), struct.pack("<I", len(t.shape))]
            parts += [struct.pack("<Q", d) for d in t.shape]
            parts += [struct.pack("<IQ", int(t.qtype), offset)]
            offset += _pad(t.nbytes)
        head = b"".join(parts)
        return head + b"\0" * (_pad(len(head)) - len(head))

    @property
    def data_bytes(self) -> int:
        return sum(_pad(t.nbytes) for t in self.tensors)


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def check_output_path(out: Path, inputs: Iterable[Path], force: bool) -> None:
    """Refuse an output that is an input (also through a symlink or hard link), lies inside a source
    directory, or exists without --force."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give a file name ending in .gguf.")
    for src in map(Path, inputs):
        if src.is_dir() and out.resolve().parent.is_relative_to(src.resolve()):
            raise InputError(f"{out}: lies inside the source directory {src}; write the output elsewhere.")
        if src.is_file() and out.exists() and os.path.samefile(src, out):
            raise InputError(f"{out}: is the input file {src} itself; choose another output path.")
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; pass --force to overwrite it.")
    if not out.resolve().parent.is_dir():
        raise InputError(f"{out}: the directory {out.parent} does not exist; create it first.")


def _chunks(produce: Callable[[], Iterable[Chunk]]) -> Iterator[bytes | memoryview | FileSpan]:
    for c in produce():
        yield memoryview(np.ascontiguousarray(c)).cast("B") if isinstance(c, np.ndarray) else c


class _SpanCopier:
    """Copies FileSpans into the output file, keeping one read descriptor per source file."""

    def __init__(self) -> None:
        self.fds: dict[Path, int] = {}
        self.kernel_copy = hasattr(os, "copy_file_range")

    def copy(self, span: FileSpan, f: BinaryIO) -> None:
        f.flush()  # buffered bytes go first; then write at the descriptor's position and move past it
        pos = f.tell()
        src = self.fds.get(span.path)
        if src is None:
            src = self.fds[span.path] = os.open(span.path, os.O_RDONLY)
        done = 0
        while done < span.nbytes:
            n = self._copy_some(src, f.fileno(), span.offset + done, pos + done, span.nbytes - done)
            if n <= 0:
                raise RuntimeError(f"{span.path}: ended before byte {span.offset + span.nbytes}")
            done += n
        f.seek(pos + done)

    def _copy_some(self, src: int, dst: int, src_off: int, dst_off: int, n: int) -> int:
        n = min(n, 1 << 30)
        if self.kernel_copy:
            try:
                return os.copy_file_range(src, dst, n, src_off, dst_off)
            except OSError as e:  # other filesystem (older kernels), or not supported here: plain copy
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                self.kernel_copy = False
        data = os.pread(src, min(n, 8 << 20), src_off)
        return os.pwrite(dst, data, dst_off) if data else 0

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


WRITEBACK_BYTES = 64 << 20


def _start_writeback(f: BinaryIO, kicked: int) -> int:
    """Every WRITEBACK_BYTES, have the kernel start writing the new bytes to disk (posix_fadvise DONTNEED
    starts writeback of dirty pages and drops clean ones): the disk works while we copy, the final fsync
    has little left to wait for, and the output does not crowd the source out of the page cache."""
    pos = f.tell()
    if pos - kicked < WRITEBACK_BYTES or not hasattr(os, "posix_fadvise"):
        return kicked
    f.flush()
    os.posix_fadvise(f.fileno(), 0, pos, os.POSIX_FADV_DONTNEED)
    return pos


def write_gguf(plan: GGUFPlan, out: Path, progress: Callable[[PlannedTensor, int], None] | None = None) -> int:
    """Write `plan` to `out` atomically; returns the file size. `progress(tensor, nbytes_done)` after each chunk."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    copier = _SpanCopier()
    try:
        with open(partial, "wb") as f:
            f.write(plan.header_bytes())
            kicked = 0
            for t in plan.tensors:
                written = 0
                for chunk in _chunks(t.produce):
                    if isinstance(chunk, FileSpan):
                        copier.copy(chunk, f)
                        n = chunk.nbytes
                    else:
                        f.write(chunk)
                        n = len(chunk)
                    written += n
                    kicked = _start_writeback(f, kicked)
                    if progress:
                        progress(t, n)
                if written != t.nbytes:
                    raise RuntimeError(f"tensor {t.name}: produced {written} bytes, expected {t.nbytes}")
                f.write(b"\0" * (_pad(t.nbytes) - t.nbytes))
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, out)
    except OSError as e:
        partial.unlink(missing_ok=True)
        if e.errno in (28, 27):  # ENOSPC, EFBIG
            raise InputError(f"{out}: {e.strerror} while writing; free space (or raise the limit) and retry.") from None
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        copier.close()
    return out.stat().st_size
