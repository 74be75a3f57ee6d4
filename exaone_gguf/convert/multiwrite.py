"""Write several GGUF variants of one checkpoint from a single read of the source.

Every variant's plan is built first (pipeline.build_plan), so all headers are written up front. Then, tensor
by tensor, the plans' producers (pipeline.TensorProducer, the one definition of a tensor's bytes) run once per
distinct target type, all of them stepped together over one shared source handle: each row chunk is read and
turned into float32 once, each type is produced once and written to every variant that wants it (q5_k_m and
q4_k_m share their Q6_K tensors with q6_k, all variants share the F32 norms). The bytes are the plan's own, so
each file equals a single conversion's. The chunks
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
from typing import Callable, Iterable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint import Checkpoint, TensorHandle
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.convert.pipeline import ConvertResult, TensorProducer, build_plan
from exaone_gguf.gguf_io.split import split_output
from exaone_gguf.gguf_io.writer import Chunk, GGUFPlan, Output, PlannedTensor, Sink, write_outputs
from exaone_gguf.quantize.target import Probe, split_outtype, variant_label


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
    opts: ConvertOptions | None = None,
    imatrix: dict[str, np.ndarray] | None = None,
    probe: Probe | None = None,
) -> list[Variant]:
    """Build every variant's plan (no paths yet); all variants list the same tensors in the same order."""
    opts = opts or ConvertOptions()
    variants = []
    for token in outtypes:
        outtype, own = split_outtype(token)  # q4_k_m@4.6: a target-bpw variant of its own
        plan, result = build_plan(ckpt, outtype, dataclasses.replace(opts, target=own or opts.target), imatrix, probe)
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


def shared_streams(producers: list[Callable[[], Iterable[Chunk]]]) -> Iterator[dict[T, Chunk]]:
    """One tensor as the chunks of each distinct type among the variants' producers (their plans' own, so the
    bytes are exactly a single conversion's), stepped in lockstep: the producers of a source tensor read one
    shared handle, so each row chunk is converted to float32 once and each type is produced once."""
    by_type: dict[T, Callable[[], Iterable[Chunk]]] = {}
    for p in producers:
        by_type.setdefault(getattr(p, "qtype", None), p)
    if len(by_type) > 1 and all(isinstance(p, TensorProducer) for p in by_type.values()):
        h = _shared(next(iter(by_type.values())).handle)  # type: ignore[union-attr]
        by_type = {q: dataclasses.replace(p, handle=h) for q, p in by_type.items()}  # type: ignore[type-var]
    gens = {q: iter(p()) for q, p in by_type.items()}
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
    variants: list[Variant],
    progress: Callable[[PlannedTensor, int], None] | None = None,
    hash: bool = False,
) -> list[int]:
    """Write every variant (paths assigned) in one pass over the source, each tensor's bytes from its plan's
    producer; returns each variant's total size. With `hash`, each variant's `sha256` gets its files' digests.
    `progress(tensor, nbytes)` after each chunk, summed over the variants."""

    def steps() -> Iterator[tuple[int, dict[T | None, Chunk] | None]]:
        """(i, None) as tensor i begins, then (i, chunks by type) per row chunk."""
        for i, t0 in enumerate(variants[0].plan.tensors):
            yield i, None
            for step in shared_streams([v.plan.tensors[i].produce for v in variants]):
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
            else:
                assert t0 is not None
                chunks = [step.get(getattr(v.plan.tensors[i].produce, "qtype", None)) for v in variants]
                _report(progress, t0, sum(s.write(c) for s, c in zip(sinks, chunks) if c is not None))
        end()

    outputs = [v.output for v in variants]
    assert all(o is not None for o in outputs), "assign_paths first"
    return write_outputs(outputs, fill, hash=hash)  # type: ignore[arg-type]


def _report(progress: Callable[[PlannedTensor, int], None] | None, t: PlannedTensor, n: int) -> None:
    if progress:
        progress(t, n)
