"""Write several GGUF variants of one checkpoint from a single read of the source.

Every variant's plan is built first (pipeline.build_plan), so all headers are written up front. Then, tensor
by tensor, pipeline.stream_tensor runs once per distinct target type, all of them stepped together over one
shared source handle: each row chunk is read and turned into float32 once, each type is produced once and
written to every variant that wants it (q5_k_m and q4_k_m share their Q6_K tensors with q6_k, all variants
share the F32 norms). The bytes are stream_tensor's own, so each file equals a single conversion's.

Each output (and each shard) is written as NAME.partial and renamed only when every variant is complete;
on any failure all partial files are removed. Every byte is hashed as it is written, so the sha256 manifest
needs no second read of the outputs (on a 1.2B release that read was about a tenth of the run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint import Checkpoint, TensorHandle
from exaone_gguf.convert.family import TensorMapping, family_for
from exaone_gguf.convert.pipeline import ConvertResult, build_plan, stream_tensor
from exaone_gguf.convert.split import output_paths, split_plan
from exaone_gguf.convert.writer import ALIGNMENT, Chunk, FileSpan, GGUFPlan, PlannedTensor
from exaone_gguf.errors import InputError
from exaone_gguf.quantize.imatrix import weights_for

FLOATS = (T.F32, T.F16, T.BF16)


@dataclass
class Variant:
    """One output type: its whole plan, the shard plans and the paths they go to."""

    outtype: str
    plan: GGUFPlan
    result: ConvertResult
    shards: list[GGUFPlan] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    sha256: dict[Path, str] = field(default_factory=dict)  # each file's digest, taken while write_variants wrote it

    @property
    def first_path(self) -> Path:
        return self.paths[0]


def plan_variants(
    ckpt: Checkpoint,
    outtypes: list[str],
    threads: int = 1,
    imatrix: dict[str, np.ndarray] | None = None,
    imatrix_file: Path | None = None,
    arch: str | None = None,
) -> list[Variant]:
    """Build every variant's plan (no paths yet); all variants list the same tensors in the same order."""
    variants = []
    for outtype in outtypes:
        plan, result = build_plan(ckpt, outtype, threads, imatrix, imatrix_file, arch=arch)
        variants.append(Variant(result.outtype, plan, result))
    names = [t.name for t in variants[0].plan.tensors]
    for v in variants[1:]:
        if [t.name for t in v.plan.tensors] != names:  # build_plan's order depends only on the checkpoint
            raise RuntimeError(f"variant {v.outtype} lists its tensors in another order")
    return variants


def assign_paths(v: Variant, out: Path, max_bytes: int | None = None, max_tensors: int | None = None) -> None:
    """Split `v` by gguf-split's rule and name its files after `out` (X.gguf or X-0000k-of-0000N.gguf)."""
    v.shards = split_plan(v.plan, max_bytes, max_tensors)
    v.paths = output_paths(out, len(v.shards))


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


class _Sink:
    """The open shard file of one variant; moves to the next shard when a tensor belongs there."""

    def __init__(self, v: Variant) -> None:
        self.v = v
        self.owner = [k for k, shard in enumerate(v.shards) for _ in shard.tensors]  # tensor index -> shard
        self.shard = -1
        self.f: BinaryIO | None = None
        self.partials: list[Path] = []
        self.hash = hashlib.sha256()
        self.written = 0
        self.src_fds: dict[Path, int] = {}

    def begin_tensor(self, i: int) -> None:
        while self.shard < self.owner[i]:
            self._next_shard()
        self.written = 0

    def _next_shard(self) -> None:
        self._close_shard()
        self.shard += 1
        path = self.v.paths[self.shard]
        partial = path.with_name(path.name + ".partial")
        self.partials.append(partial)
        self.f = open(partial, "wb")
        self.hash = hashlib.sha256()
        self._put(self.v.shards[self.shard].header_bytes())

    def _put(self, data: bytes | memoryview) -> None:
        assert self.f is not None
        self.f.write(data)
        self.hash.update(data)

    def write(self, chunk: bytes | np.ndarray | FileSpan) -> int:
        assert self.f is not None
        if isinstance(chunk, FileSpan):
            fd = self.src_fds.get(chunk.path)
            if fd is None:
                fd = self.src_fds[chunk.path] = os.open(chunk.path, os.O_RDONLY)
            done = 0
            while done < chunk.nbytes:
                data = os.pread(fd, min(chunk.nbytes - done, 8 << 20), chunk.offset + done)
                if not data:
                    raise RuntimeError(f"{chunk.path}: ended before byte {chunk.offset + chunk.nbytes}")
                self._put(data)
                done += len(data)
            n = chunk.nbytes
        else:
            mv = memoryview(np.ascontiguousarray(chunk)).cast("B") if isinstance(chunk, np.ndarray) else chunk
            self._put(mv)
            n = len(mv)
        self.written += n
        return n

    def end_tensor(self, nbytes: int, name: str) -> None:
        assert self.f is not None
        if self.written != nbytes:
            raise RuntimeError(f"{self.v.outtype}: tensor {name} got {self.written} bytes, expected {nbytes}")
        self._put(b"\0" * (_pad(nbytes) - nbytes))

    def _close_shard(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None
            self.v.sha256[self.v.paths[self.shard]] = self.hash.hexdigest()

    def finish(self) -> None:
        while self.shard < len(self.v.shards) - 1:  # a shard with no tensors cannot happen, but be exact
            self._next_shard()
        self._close_shard()

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        for p in self.partials:
            p.unlink(missing_ok=True)

    def close_sources(self) -> None:
        for fd in self.src_fds.values():
            os.close(fd)
        self.src_fds.clear()


class _SharedRows(TensorHandle):
    """A safetensors tensor whose float32 rows are converted once per row range and handed to every reader
    (stream_tensor of each output type asks for the same ranges in the same order). The cached rows are
    read-only, so a reader that tried to change them in place would fail rather than corrupt the others."""

    def to_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        cache = self.__dict__.setdefault("_cache", {})
        key = (start, stop)
        if key not in cache:
            cache.clear()
            x = TensorHandle.to_f32(self, start, stop)
            x.setflags(write=False)
            cache[key] = x
        return cache[key]


def _shared(handle):
    if type(handle) is not TensorHandle:  # derived handles (AWQ dequantization): each reader computes its own
        return handle
    return _SharedRows(**{f.name: getattr(handle, f.name) for f in dataclasses.fields(handle)})


def shared_streams(
    handle, m: TensorMapping, qtypes: list[T], threads: int = 1, imatrix: np.ndarray | None = None
) -> Iterator[dict[T, Chunk]]:
    """One source tensor, read once, as the chunks of each distinct type in `qtypes`: pipeline.stream_tensor
    per type (so the bytes are exactly a single conversion's), stepped in lockstep over one shared handle,
    so each row chunk is converted to float32 once and each type is quantized once."""
    h = _shared(handle)
    gens = {q: iter(stream_tensor(h, q, m, threads, None if q in FLOATS else imatrix)) for q in dict.fromkeys(qtypes)}
    while gens:
        step: dict[T, Chunk] = {}
        for q, g in list(gens.items()):
            chunk = next(g, None)
            if chunk is None:
                del gens[q]
            else:
                step[q] = chunk
        if step:
            yield step


def write_variants(
    ckpt: Checkpoint,
    variants: list[Variant],
    threads: int = 1,
    imatrix: dict[str, np.ndarray] | None = None,
    progress: Callable[[PlannedTensor, int], None] | None = None,
    arch: str | None = None,
) -> list[int]:
    """Write every variant (paths assigned) in one pass over the source; returns each variant's total size
    and fills each variant's `sha256`. `progress(tensor, nbytes)` after each chunk, summed over the variants."""
    fam = family_for(ckpt.spec, arch)  # the mapping build_plan used: same handles, transforms, weights
    mappings = {m.gguf_name: m for m in fam.tensor_map(ckpt.spec)}
    sinks = [_Sink(v) for v in variants]
    renamed: list[Path] = []
    try:
        for i, t0 in enumerate(variants[0].plan.tensors):
            tensors = [v.plan.tensors[i] for v in variants]
            for s in sinks:
                s.begin_tensor(i)
            m = mappings.get(t0.name)
            if m is None:  # generated tensors (rope_freqs): cheap, produced per variant
                for s, t in zip(sinks, tensors):
                    _report(progress, t0, sum(s.write(c) for c in t.produce()))
            else:
                qtypes = [t.qtype for t in tensors]
                w = weights_for(imatrix, t0.name, t0.shape) if any(q not in FLOATS for q in qtypes) else None
                for step in shared_streams(m.open(ckpt.tensors), m, qtypes, threads, w):
                    _report(progress, t0, sum(s.write(step[t.qtype]) for s, t in zip(sinks, tensors) if t.qtype in step))
            for s, t in zip(sinks, tensors):
                s.end_tensor(t.nbytes, t.name)
        for s in sinks:
            s.finish()
        for s in sinks:
            for partial, final in zip(s.partials, s.v.paths):
                os.replace(partial, final)
                renamed.append(final)
    except OSError as e:
        _cleanup(sinks, renamed)
        if e.errno in (28, 27):  # ENOSPC, EFBIG
            raise InputError(f"{variants[0].first_path.parent}: {e.strerror} while writing; free space and retry.") from None
        raise
    except BaseException:
        _cleanup(sinks, renamed)
        raise
    finally:
        for s in sinks:
            s.close_sources()
    return [sum(p.stat().st_size for p in v.paths) for v in variants]


def _report(progress: Callable[[PlannedTensor, int], None] | None, t: PlannedTensor, n: int) -> None:
    if progress:
        progress(t, n)


def _cleanup(sinks: Iterable[_Sink], renamed: list[Path]) -> None:
    for s in sinks:
        s.abort()
    for p in renamed:
        p.unlink(missing_ok=True)
