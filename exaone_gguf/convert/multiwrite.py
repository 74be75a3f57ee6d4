"""Write several GGUF variants of one checkpoint from a single read of the source.

Every variant's plan is built first (pipeline.build_plan), so all headers are written up front. Then, tensor
by tensor, pipeline.stream_tensor runs once per distinct target type, all of them stepped together over one
shared source handle: each row chunk is read and turned into float32 once, each type is produced once and
written to every variant that wants it (q5_k_m and q4_k_m share their Q6_K tensors with q6_k, all variants
share the F32 norms). The bytes are stream_tensor's own, so each file equals a single conversion's. The chunks
are made in a worker thread a couple of steps ahead of the thread that writes and hashes them (`ahead`), so the
writes overlap the quantization kernels; memory stays a few chunks.

The files go through gguf_io's one write path (gguf_io.writer.write_outputs): each output and each shard is
written as NAME.partial and renamed only when every variant is complete; on any failure all partial files are
removed. A release hashes every byte as it is written, so the sha256 manifest needs no second read of the
outputs (on a 1.2B release that read was about a tenth of the run); a single convert does not hash.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint import Checkpoint, TensorHandle
from exaone_gguf.convert.pipeline import ConvertResult, build_plan, stream_tensor
from exaone_gguf.families import TensorMapping, family_for
from exaone_gguf.gguf_io.split import split_output
from exaone_gguf.gguf_io.writer import Chunk, GGUFPlan, Output, PlannedTensor, Sink, write_outputs
from exaone_gguf.quantize.imatrix import weights_for
from exaone_gguf.quantize.mixtures import TypeOverrides
from exaone_gguf.quantize.target import Probe, Target, split_outtype, variant_label

FLOATS = (T.F32, T.F16, T.BF16)


@dataclass
class Variant:
    """One output type: its whole plan, the shard plans and the paths they go to."""

    outtype: str
    plan: GGUFPlan
    result: ConvertResult
    output: Output | None = None  # the files (one, or the shards) the plan goes to; assign_paths sets it

    @property
    def paths(self) -> list[Path]:
        assert self.output is not None
        return self.output.paths

    @property
    def first_path(self) -> Path:
        return self.paths[0]

    @property
    def sha256(self) -> dict[Path, str]:
        """Each file's digest, taken while write_variants wrote it (with hashing)."""
        assert self.output is not None
        return self.output.sha256


def plan_variants(
    ckpt: Checkpoint,
    outtypes: list[str],
    threads: int = 1,
    imatrix: dict[str, np.ndarray] | None = None,
    imatrix_file: Path | None = None,
    arch: str | None = None,
    overrides: TypeOverrides | None = None,
    target: Target | None = None,
    probe: Probe | None = None,
) -> list[Variant]:
    """Build every variant's plan (no paths yet); all variants list the same tensors in the same order."""
    variants = []
    for token in outtypes:
        outtype, own = split_outtype(token)  # q4_k_m@4.6: a target-bpw variant of its own
        plan, result = build_plan(
            ckpt,
            outtype,
            threads,
            imatrix,
            imatrix_file,
            arch=arch,
            overrides=overrides,
            target=own or target,
            probe=probe,
        )
        variants.append(Variant(variant_label(result.outtype, own), plan, result))
    names = [t.name for t in variants[0].plan.tensors]
    for v in variants[1:]:
        if [t.name for t in v.plan.tensors] != names:  # build_plan's order depends only on the checkpoint
            raise RuntimeError(f"variant {v.outtype} lists its tensors in another order")
    return variants


def assign_paths(v: Variant, out: Path, max_bytes: int | None = None, max_tensors: int | None = None) -> None:
    """Split `v` by gguf-split's rule and name its files after `out` (X.gguf or X-0000k-of-0000N.gguf)."""
    v.output = split_output(v.plan, Path(out), max_bytes, max_tensors)


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
    distinct = list(dict.fromkeys(qtypes))
    h = _shared(handle) if len(distinct) > 1 else handle  # one type (a single convert): nothing to share
    gens = {q: iter(stream_tensor(h, q, m, threads, None if q in FLOATS else imatrix)) for q in distinct}
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


AHEAD_STEPS = 2  # row chunks (of every type) made ahead of the writer: memory stays a few chunks


def ahead(items: Iterator, depth: int) -> Iterator:
    """The items of `items`, produced by a worker thread up to `depth` items ahead of the consumer. An
    exception in the worker is raised here, in order; when the consumer stops (done, failed, interrupted),
    the worker stops at its next item and is joined before this returns."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put((False, e))

    worker = threading.Thread(target=work, name="exaone-gguf-chunks", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()  # the worker has left it: release its handles now


def write_variants(
    ckpt: Checkpoint,
    variants: list[Variant],
    threads: int = 1,
    imatrix: dict[str, np.ndarray] | None = None,
    progress: Callable[[PlannedTensor, int], None] | None = None,
    arch: str | None = None,
    hash: bool = False,
) -> list[int]:
    """Write every variant (paths assigned) in one pass over the source; returns each variant's total size.
    With `hash`, each variant's `sha256` gets its files' digests. `progress(tensor, nbytes)` after each chunk,
    summed over the variants."""
    fam = family_for(ckpt.spec, arch)  # the mapping build_plan used: same handles, transforms, weights
    mappings = {m.gguf_name: m for m in fam.tensor_map(ckpt.spec)}

    def steps() -> Iterator[tuple[int, dict[T, Chunk] | None]]:
        """(i, None) as tensor i begins, then (i, chunks by type) per row chunk; generated tensors (rope_freqs:
        cheap, produced per variant by the writer) get only their (i, None)."""
        for i, t0 in enumerate(variants[0].plan.tensors):
            yield i, None
            m = mappings.get(t0.name)
            if m is not None:
                qtypes = [v.plan.tensors[i].qtype for v in variants]
                w = weights_for(imatrix, t0.name, t0.shape) if any(q not in FLOATS for q in qtypes) else None
                for step in shared_streams(m.open(ckpt.tensors), m, qtypes, threads, w):
                    yield i, step

    def fill(sinks: list[Sink]) -> None:
        t0: PlannedTensor | None = None
        tensors: list[PlannedTensor] = []

        def end() -> None:
            for s, t in zip(sinks, tensors):
                s.end_tensor(t)

        # The chunks are made (source read, widened, quantized) in a worker thread a few steps ahead of this
        # one, which writes and hashes them: the kernels keep the cores busy while the files are written.
        for i, step in ahead(steps(), AHEAD_STEPS):
            if step is None:
                end()
                t0, tensors = variants[0].plan.tensors[i], [s.begin_tensor(i) for s in sinks]
                if t0.name not in mappings:
                    for s, t in zip(sinks, tensors):
                        _report(progress, t0, sum(s.write(c) for c in t.produce()))
            else:
                assert t0 is not None
                _report(progress, t0, sum(s.write(step[t.qtype]) for s, t in zip(sinks, tensors) if t.qtype in step))
        end()

    outputs = [v.output for v in variants]
    assert all(o is not None for o in outputs), "assign_paths first"
    return write_outputs(outputs, fill, hash=hash)  # type: ignore[arg-type]


def _report(progress: Callable[[PlannedTensor, int], None] | None, t: PlannedTensor, n: int) -> None:
    if progress:
        progress(t, n)
