"""A streaming, atomic GGUF v3 writer.

All tensor sizes are known before any data is produced, so the header, metadata and tensor table are written
first and tensor bytes are then streamed chunk by chunk: memory stays at one chunk, whatever the model size.
Every output goes through one path (`write_outputs`): a single file, the shards of a split file, and the
several outputs of a release written in one pass alike. Each file is written as NAME.partial, fsynced and
renamed when every output is complete; on any failure the partial files are removed. Hashing while writing
is optional (a release's manifest wants it; a single convert does not pay for it).
"""

from __future__ import annotations

import errno
import hashlib
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
    """Copies FileSpans into an output file, keeping one read descriptor per source file. Without hashing
    the kernel copies them (copy_file_range) and no byte passes through this process; with hashing they are
    read (pread) so the digest sees them."""

    def __init__(self) -> None:
        self.fds: dict[Path, int] = {}
        self.kernel_copy = hasattr(os, "copy_file_range")

    def _fd(self, path: Path) -> int:
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def copy(self, span: FileSpan, f: BinaryIO) -> None:
        f.flush()  # buffered bytes go first; then write at the descriptor's position and move past it
        pos = f.tell()
        src = self._fd(span.path)
        done = 0
        while done < span.nbytes:
            n = self._copy_some(src, f.fileno(), span.offset + done, pos + done, span.nbytes - done)
            if n <= 0:
                raise RuntimeError(f"{span.path}: ended before byte {span.offset + span.nbytes}")
            done += n
        f.seek(pos + done)

    def read(self, span: FileSpan) -> Iterator[bytes]:
        src = self._fd(span.path)
        done = 0
        while done < span.nbytes:
            data = os.pread(src, min(span.nbytes - done, 8 << 20), span.offset + done)
            if not data:
                raise RuntimeError(f"{span.path}: ended before byte {span.offset + span.nbytes}")
            done += len(data)
            yield data

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


@dataclass
class Output:
    """One GGUF output: the plans of its files (one plan for an unsplit file, else one per shard, see
    gguf_io.split) and the paths they go to. `sha256` gets each file's digest when written with hashing."""

    shards: list[GGUFPlan]
    paths: list[Path]
    sha256: dict[Path, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.paths = [Path(p) for p in self.paths]
        if len(self.shards) != len(self.paths):
            raise ValueError(f"{len(self.shards)} plans for {len(self.paths)} paths")


class Sink:
    """The open file of one Output: tensors arrive in the order of the whole plan (the concatenation of the
    shard plans) and the sink moves to the next shard when a tensor belongs there. Each file is written as
    NAME.partial; `hash` digests every byte as it is written."""

    def __init__(self, output: Output, hash: bool = False) -> None:
        self.output = output
        self.owner = [k for k, shard in enumerate(output.shards) for _ in shard.tensors]  # tensor index -> file
        self.tensors = [t for shard in output.shards for t in shard.tensors]
        self.hash = hash
        self.file = -1
        self.f: BinaryIO | None = None
        self.partials: list[Path] = []
        self.digest = hashlib.sha256() if hash else None
        self.written = 0
        self.kicked = 0
        self.spans = _SpanCopier()

    def begin_tensor(self, i: int) -> PlannedTensor:
        while self.file < self.owner[i]:
            self._next_file()
        self.written = 0
        return self.tensors[i]

    def _next_file(self) -> None:
        self._close_file()
        self.file += 1
        path = self.output.paths[self.file]
        partial = path.with_name(path.name + ".partial")
        self.partials.append(partial)
        self.f = open(partial, "wb")
        self.kicked = 0
        self.digest = hashlib.sha256() if self.hash else None
        self._put(self.output.shards[self.file].header_bytes())

    def _put(self, data: bytes | memoryview) -> None:
        assert self.f is not None
        self.f.write(data)
        if self.digest is not None:
            self.digest.update(data)

    def write(self, chunk: Chunk) -> int:
        """Append one chunk of the current tensor; returns its size in bytes."""
        assert self.f is not None
        if isinstance(chunk, FileSpan):
            if self.digest is None:
                self.spans.copy(chunk, self.f)
            else:
                for data in self.spans.read(chunk):
                    self._put(data)
            n = chunk.nbytes
        else:
            mv = memoryview(np.ascontiguousarray(chunk)).cast("B") if isinstance(chunk, np.ndarray) else chunk
            self._put(mv)
            n = len(mv)
        self.written += n
        self.kicked = _start_writeback(self.f, self.kicked)
        return n

    def end_tensor(self, t: PlannedTensor) -> None:
        if self.written != t.nbytes:
            raise RuntimeError(f"tensor {t.name}: produced {self.written} bytes, expected {t.nbytes}")
        self._put(b"\0" * (_pad(t.nbytes) - t.nbytes))

    def _close_file(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None
            if self.digest is not None:
                self.output.sha256[self.output.paths[self.file]] = self.digest.hexdigest()

    def finish(self) -> None:
        while self.file < len(self.output.shards) - 1:  # a file without tensors (an empty plan) still gets written
            self._next_file()
        self._close_file()

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        for p in self.partials:
            p.unlink(missing_ok=True)


def write_outputs(outputs: list[Output], fill: Callable[[list[Sink]], None], hash: bool = False) -> list[int]:
    """The one write path of every GGUF output: open a Sink per output, let `fill(sinks)` write every tensor
    (begin_tensor / write / end_tensor, in plan order), then fsync each file and rename every NAME.partial
    only when all outputs are complete. On any failure or interruption every partial and every already
    renamed file is removed; a full disk (ENOSPC, or EFBIG past a size limit) becomes one InputError.
    Returns each output's total size in bytes."""
    sinks = [Sink(o, hash) for o in outputs]
    renamed: list[Path] = []
    try:
        fill(sinks)
        for s in sinks:
            s.finish()
        for s in sinks:
            for partial, final in zip(s.partials, s.output.paths):
                os.replace(partial, final)
                renamed.append(final)
    except OSError as e:
        _cleanup(sinks, renamed)
        if e.errno in (errno.ENOSPC, errno.EFBIG):
            where = outputs[0].paths[0] if len(outputs) == 1 else outputs[0].paths[0].parent
            raise InputError(
                f"{where}: {e.strerror} while writing; free space (or raise the limit) and retry."
            ) from None
        raise
    except BaseException:
        _cleanup(sinks, renamed)
        raise
    finally:
        for s in sinks:
            s.spans.close()
    return [sum(p.stat().st_size for p in o.paths) for o in outputs]


def _cleanup(sinks: Iterable[Sink], renamed: list[Path]) -> None:
    for s in sinks:
        s.abort()
    for p in renamed:
        p.unlink(missing_ok=True)


def write_plan(sink: Sink, plan: GGUFPlan, progress: Callable[[PlannedTensor, int], None] | None = None) -> None:
    """Write every tensor of `plan` (the whole plan of `sink`'s output) from its own producers."""
    for i, t in enumerate(plan.tensors):
        sink.begin_tensor(i)
        for chunk in _chunks(t.produce):
            n = sink.write(chunk)
            if progress:
                progress(t, n)
        sink.end_tensor(t)


def write_gguf(plan: GGUFPlan, out: Path, progress: Callable[[PlannedTensor, int], None] | None = None) -> int:
    """Write `plan` to the single file `out` atomically; returns its size. `progress(tensor, nbytes_done)`
    after each chunk. (Shards: gguf_io.split.split_output, then write_outputs.)"""
    [size] = write_outputs([Output([plan], [Path(out)])], lambda sinks: write_plan(sinks[0], plan, progress))
    return size
