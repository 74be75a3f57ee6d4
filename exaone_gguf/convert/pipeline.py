"""Checkpoint -> GGUF in one streaming pass: plan every key and tensor, then stream tensor by tensor
(convert.driver runs it; gguf_io.writer writes the bytes)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType

from exaone_gguf.checkpoint import Checkpoint, TensorHandle
from exaone_gguf.convert.metadata import add_general
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.convert.vocab import add_vocab
from exaone_gguf.elements import bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits
from exaone_gguf.errors import InputError
from exaone_gguf.families import Family, TensorMapping, family_for, mtp_sources_dropped, with_mtp
from exaone_gguf.gguf_io.writer import ALIGNMENT, FileSpan, GGUFPlan, PlannedTensor, tensor_nbytes
from exaone_gguf.model.rope import llama3_divisors
from exaone_gguf.quantize.formats import is_quantized
from exaone_gguf.quantize.imatrix import weights_for
from exaone_gguf.quantize.kernels import quantize
from exaone_gguf.quantize.mixtures import TypeOverrides, file_type_value, plan_keys, plan_types
from exaone_gguf.quantize.target import (
    Probe,
    Target,
    TargetPlan,
    TargetTensor,
    check_target_use,
    plan_target,
    target_keys,
)

LOOKUP_TENSORS = ("token_embd.weight", "per_layer_token_embd.weight")  # looked up, not multiplied

FLOAT_OUTTYPES = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16}
_SOURCE_TO_OUT = {"BF16": T.BF16, "F16": T.F16, "F32": T.F32, "F64": T.F32}
CHUNK_BYTES = 16 << 20  # float32 bytes handled per step; bounds memory whatever the tensor size
SPAN_BYTES = 64 << 20  # source bytes per kernel copy when a tensor's bytes stay as they are


def convert_rows(x: np.ndarray, qtype: T, threads: int = 1, imatrix: np.ndarray | None = None) -> np.ndarray:
    """float32 rows -> the bytes of `qtype` rows (`imatrix`: per-column importance for quantized types)."""
    if qtype == T.F32:
        return x.astype(np.float32, copy=False)
    if qtype == T.F16:
        return f32_to_f16_bits(x)
    if qtype == T.BF16:
        return f32_to_bf16_bits(x)
    return quantize(np.ascontiguousarray(x, dtype=np.float32), qtype, imatrix=imatrix, threads=threads)


def convert_rows_at(
    x: np.ndarray, start: int, n_rows: int, qtype: T, threads: int = 1, imatrix: np.ndarray | None = None
) -> np.ndarray:
    """convert_rows for rows [start, start + len(x)) of a tensor of `n_rows` flat rows. A 3-D expert tensor's
    imatrix holds one vector per expert (ne[0] * n_expert values, as llama.cpp's): each expert's rows get theirs."""
    ncols = x.shape[-1]
    if imatrix is None or imatrix.size == ncols:
        return convert_rows(x, qtype, threads, imatrix)
    per = n_rows // (imatrix.size // ncols)  # rows of one expert
    parts, r = [], start
    while r < start + len(x):
        e, stop = r // per, min(start + len(x), (r // per + 1) * per)
        parts.append(convert_rows(x[r - start : stop - start], qtype, threads, imatrix[e * ncols : (e + 1) * ncols]))
        r = stop
    return np.concatenate([p.reshape(-1).view(np.uint8) for p in parts])


@lru_cache(maxsize=None)
def _table16(src_dtype: str, qtype: T) -> np.ndarray | None:
    """For a 16-bit float source and a 16-bit float target: the target bits of all 65536 source patterns,
    made by the very conversion used row by row (so a lookup gives identical bytes, ~4x faster)."""
    if src_dtype not in ("BF16", "F16") or qtype not in (T.F16, T.BF16):
        return None
    bits = np.arange(1 << 16, dtype=np.uint16)
    return convert_rows(bf16_bits_to_f32(bits) if src_dtype == "BF16" else f16_bits_to_f32(bits), qtype)


def _lookup(table: np.ndarray, raw: np.ndarray) -> np.ndarray:
    flat = raw.reshape(-1).view(np.uint16)  # the bit patterns index the table
    out = np.empty(flat.size, table.dtype)
    step = 1 << 18  # the index array of one step stays in cache
    for i in range(0, flat.size, step):
        np.take(table, flat[i : i + step].astype(np.intp), out=out[i : i + step], mode="clip")
    return out.reshape(raw.shape)


def stream_tensor(
    handle: TensorHandle, qtype: T, m: TensorMapping | None = None, threads: int = 1, imatrix: np.ndarray | None = None
) -> Iterator[np.ndarray | FileSpan]:
    """Yield the GGUF bytes of one checkpoint tensor in row chunks. Bytes kept as they are go as spans of the
    source file (the writer copies them in the kernel); mapped pages are released chunk by chunk, so memory
    stays at one chunk whatever the model size."""
    transform = m.transform if m else None
    parts = getattr(handle, "parts", None)  # stacked experts: [N, *part] is the N parts' bytes one after another
    if parts is not None and transform is None and all(isinstance(p, TensorHandle) for p in parts):
        ncols = handle.row_numel
        for e, part in enumerate(parts):  # each part as a tensor of its own: spans, lookups, its imatrix slice
            w = imatrix if imatrix is None or imatrix.size == ncols else imatrix[e * ncols : (e + 1) * ncols]
            yield from stream_tensor(part, qtype, None, threads, w)
        return
    rows_per_chunk = max(1, CHUNK_BYTES // (4 * handle.row_numel))
    group = getattr(m, "row_group", 1) if transform is not None else 1  # a q/k permutation needs whole heads
    rows_per_chunk = max(group, rows_per_chunk // group * group)
    # Only safetensors handles have file bytes to copy; derived handles (AWQ dequantization) are computed.
    passthrough = (
        isinstance(handle, TensorHandle)
        and transform is None
        and _SOURCE_TO_OUT.get(handle.dtype) == qtype
        and handle.dtype != "F64"
    )
    encode = getattr(handle, "encode_rows", None)  # quantized source: its own codes where the type holds them
    plain = isinstance(handle, TensorHandle) and transform is None and not passthrough
    table = _table16(handle.dtype, qtype) if plain else None  # 16-bit float -> the other one: a lookup
    if len(handle.shape) <= 1:
        x = handle.raw() if passthrough else handle.to_f32()
        yield (
            x
            if passthrough
            else convert_rows_at(x if transform is None else transform(x), 0, 1, qtype, threads, imatrix)
        )
    else:
        if passthrough:  # large spans: fewer copy calls; memory is no concern, no byte enters this process
            rows_per_chunk = max(1, SPAN_BYTES // max(1, handle.nbytes // max(1, handle.n_rows)))
        for start in range(0, handle.n_rows, rows_per_chunk):
            stop = min(handle.n_rows, start + rows_per_chunk)
            if passthrough:
                yield FileSpan(handle.file.path, *handle.byte_range(start, stop))
                continue
            if table is not None:
                out = _lookup(table, handle.raw(start, stop))
            else:
                out = encode(qtype, start, stop, transform) if encode is not None else None
                if out is None:
                    x = handle.to_f32(start, stop)
                    out = convert_rows_at(
                        x if transform is None else transform(x), start, handle.n_rows, qtype, threads, imatrix
                    )
            handle.release(start, stop)
            yield out
    handle.release()


@dataclass
class ConvertResult:
    output: Path
    arch: str
    outtype: str
    file_type: int
    n_tensors: int
    n_params: int
    file_size: int
    tensor_types: dict[str, str] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)  # source tensors with NaN/inf (--allow-nonfinite)
    files: list[Path] = field(default_factory=list)  # every file written: [output], or the shards of a split output
    report: Any = None  # the validation report, when the run validated its output
    threads: int = 1  # worker threads the kernels were given (the bytes do not depend on it)
    target: dict | None = None  # --target-bpw / --target-size: the target, the plan's bytes and type counts
    notes: list[str] = field(default_factory=list)  # a quantized source: codes kept, or rounded once (and why)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("files", "report")}
        d["output"] = str(self.output)
        return d


def check_tensors(ckpt: Checkpoint, fam: Family, mappings: list[TensorMapping]) -> None:
    """Every tensor the config implies exists with the right shape, and nothing unexplained is left over.
    A mapping may read several source tensors (stacked experts) or part of one (a fused tensor's slice)."""
    for m in mappings:
        for name, shape in m.sources().items():
            h = ckpt.tensor(name)
            if h.shape != shape:
                raise InputError(
                    f"{h.file.path}: tensor '{name}' has shape {list(h.shape)} but config.json implies "
                    f"{list(shape)}; the weights and config do not match."
                )
            if h.dtype not in _SOURCE_TO_OUT:
                raise InputError(f"{h.file.path}: tensor '{name}' has dtype {h.dtype}; expected BF16, F16 or F32.")
        m.open(ckpt.tensors)  # a stack of parts in different dtypes is refused here
    used = {name for m in mappings for name in m.sources()}
    used |= set(fam.left_out(ckpt.spec)) if fam.left_out else set()  # another file's (the vision projector's)
    used |= mtp_sources_dropped(fam, ckpt.spec)  # convert --no-mtp
    if ckpt.spec.tie_word_embeddings:
        used.add("lm_head.weight")  # a tied checkpoint may still carry the copy; the embedding is used
    extra = sorted(n for n in ckpt.tensors if n not in used and not fam.ignorable(n))
    if extra:
        raise InputError(
            f"{ckpt.tensors[extra[0]].file.path}: unexpected tensor '{extra[0]}' "
            f"({len(extra)} unexpected in all) for {ckpt.spec.architecture}; is config.json the right one?"
        )


def auto_outtype(ckpt: Checkpoint, mappings: list[TensorMapping]) -> str:
    """Keep the source precision: the dtype of the first 2-D weight."""
    for m in mappings:
        h = m.open(ckpt.tensors)
        if len(h.shape) == 2:
            return {T.BF16: "bf16", T.F16: "f16", T.F32: "f32"}[_SOURCE_TO_OUT[h.dtype]]
    return "f32"


@dataclass(frozen=True, eq=False)
class TensorProducer:
    """A checkpoint tensor's bytes in a plan: stream_tensor of its source handle as one output type (the one
    definition; multiwrite calls it, with the handle shared between the types that read the same rows)."""

    handle: TensorHandle
    qtype: T
    mapping: TensorMapping
    threads: int
    weights: np.ndarray | None

    def __call__(self) -> Iterator[np.ndarray | FileSpan]:
        return stream_tensor(self.handle, self.qtype, self.mapping, self.threads, self.weights)


def build_plan(
    ckpt: Checkpoint,
    outtype: str,
    opts: ConvertOptions,
    imatrix: dict[str, np.ndarray] | None = None,
    probe: Probe | None = None,
) -> tuple[GGUFPlan, ConvertResult]:
    """One output type's plan from `opts` (threads, arch, overrides, target, the imatrix file's name);
    `imatrix`: the loaded importance weights, `probe`: the measured sensitivity a target plan uses."""
    threads, overrides, target = opts.threads, opts.overrides, opts.target
    imatrix_file = Path(opts.imatrix) if opts.imatrix else None
    spec = ckpt.spec
    fam = family_for(spec, opts.arch)  # arch: another GGUF architecture, e.g. EXAONE 3.x as "llama"
    mappings = fam.tensor_map(spec)
    check_tensors(ckpt, fam, mappings)
    if outtype == "auto":
        outtype = auto_outtype(ckpt, mappings)
    gguf_shapes = [(m.gguf_name, tuple(reversed(m.hf_shape))) for m in mappings]
    # per-tensor storage type as llama.cpp's quantizer chooses it: norms F32, weights the type or the mixture's
    hp = {key: value for key, _, value, _ in fam.hparams(spec)}  # block_count counts MTP blocks; experts
    types = plan_types(
        gguf_shapes,
        outtype,
        fam.arch,
        hp.get(f"{fam.arch}.block_count", spec.num_layers),
        n_gqa=spec.num_heads // spec.num_kv_heads,
        has_imatrix=imatrix is not None,
        n_expert=hp.get(f"{fam.arch}.expert_count", 1),
        overrides=overrides,
    )
    recorded = overrides
    if outtype in ("q4_0", "q4_1"):
        recorded = keep_source_precision(ckpt, mappings, types, overrides)
    file_type = file_type_value(outtype)

    plan = GGUFPlan()
    plan.add_string("general.architecture", fam.arch)
    n_params = sum(math.prod(m.hf_shape) for m in mappings)
    full = with_mtp(spec)  # the size label names the model: with the MTP blocks --no-mtp leaves out
    labelled = n_params if full is spec else sum(math.prod(m.hf_shape) for m in fam.tensor_map(full))
    add_general(plan, ckpt, file_type, labelled)
    fam.add_hparams(spec, plan)
    add_vocab(plan, ckpt.tokenizer, spec)
    if imatrix is not None and outtype not in FLOAT_OUTTYPES:
        add_imatrix_keys(plan, imatrix_file or Path("imatrix"), imatrix)
    divisors = llama3_divisors(spec)
    shapes = ([("rope_freqs.weight", (len(divisors),))] if divisors is not None else []) + gguf_shapes
    chosen = [name for name, _ in gguf_shapes if is_quantized(types[name])]  # what a target chooses
    tplan = None
    if target is not None:
        check_target_use(target, outtype, imatrix is not None, overrides)
        header = header_size(plan, shapes, target, [types[n] for n in chosen], file_type, recorded)
        tplan = target_types(ckpt, mappings, gguf_shapes, types, target, imatrix, threads, probe, header)
        types.update(tplan.types)
    add_record_keys(plan, target, [types[n] for n in chosen], file_type, recorded)

    if divisors is not None:
        plan.add_tensor("rope_freqs.weight", (len(divisors),), T.F32, lambda d=divisors: [d])
    for m, (name, shape) in zip(mappings, gguf_shapes):
        handle = m.open(ckpt.tensors)
        qtype = types[name]
        w = weights_for(imatrix, name, shape) if qtype not in (T.F32, T.F16, T.BF16) else None
        plan.add_tensor(name, shape, qtype, TensorProducer(handle, qtype, m, threads, w))
    result = ConvertResult(
        output=Path(),
        arch=fam.arch,
        outtype=outtype,
        file_type=file_type,
        n_tensors=len(plan.tensors),
        n_params=n_params,
        file_size=0,
        tensor_types={t.name: t.qtype.name for t in plan.tensors},
        threads=threads,
        target=target_result(target, tplan) if tplan is not None else None,
        notes=source_notes(ckpt, mappings, types),
    )
    return plan, result


def target_types(
    ckpt: Checkpoint,
    mappings: list[TensorMapping],
    gguf_shapes: list[tuple[str, tuple[int, ...]]],
    types: dict[str, T],
    target: Target,
    imatrix: dict[str, np.ndarray] | None,
    threads: int,
    probe: Probe | None,
    header: int = 0,
) -> TargetPlan:
    """--target-bpw / --target-size over the tensors the file type quantizes (rows read in GGUF order, so the
    plan equals quantize's on the F32 file of the same checkpoint). `header`: the bytes before the tensor data,
    which a --target-size budget counts."""
    divisors = llama3_divisors(ckpt.spec)
    align = ALIGNMENT if target.size is not None else 1
    header = header if target.size is not None else 0  # --target-bpw counts tensor data only
    fixed = (header + padded(4 * len(divisors), align)) if divisors is not None else header  # rope_freqs, F32
    n_params = len(divisors) if divisors is not None else 0
    tensors = []
    for m, (name, shape) in zip(mappings, gguf_shapes):
        n_params += math.prod(shape)
        if not is_quantized(types[name]):
            fixed += padded(tensor_nbytes(types[name], shape), align)
            continue

        def sample(rows: np.ndarray, m: TensorMapping = m, ncols: int = shape[0]) -> np.ndarray:
            handle = m.open(ckpt.tensors)
            x = handle.to_f32().reshape(-1, ncols) if m.transform is None else m.transform(handle.to_f32())
            handle.release()
            return np.asarray(x, dtype=np.float32).reshape(-1, ncols)[rows]

        tensors.append(TargetTensor(name, shape, sample, weights_for(imatrix, name, shape), name in LOOKUP_TENSORS))
    return plan_target(target, tensors, fixed, n_params, str(ckpt.path), threads, probe, default=types, align=align)


def keep_source_precision(
    ckpt: Checkpoint, mappings: list[TensorMapping], types: dict[str, T], overrides: TypeOverrides | None
) -> TypeOverrides | None:
    """A quantized source whose codes a 4-bit type keeps (AWQ -> Q4_1, symmetric GPTQ -> Q4_0, ...): the weights it
    left unquantized on purpose (embeddings, lm_head) get Q8_0 instead of a 4-bit rounding its quantizer never
    calibrated for (like llama-quantize --token-embedding-type). Returns `overrides` with those choices added, as
    the file records them (quantize.plan.tensor_types)."""
    handles = {m.gguf_name: m.open(ckpt.tensors) for m in mappings}
    if not any(getattr(h, "why_not", lambda q: "")(types[n]) is None for n, h in handles.items()):
        return overrides
    kept = []
    for m in mappings:
        name = m.gguf_name
        if _source_format(handles[name]) is None and types[name] in (T.Q4_0, T.Q4_1) and m.hf_shape[-1] % 32 == 0:
            types[name] = T.Q8_0
            kept.append((f"^{re.escape(name)}$", T.Q8_0))
    ov = overrides or TypeOverrides()
    return dataclasses.replace(ov, tensor_types=(*kept, *ov.tensor_types)) if kept else overrides


def _source_format(handle) -> str | None:
    """The quantized format a handle (or the experts stacked in it) is read from; None for float weights."""
    parts = [handle, *getattr(handle, "parts", ())]
    return next((p.fmt for p in parts if hasattr(p, "fmt")), None)


def source_notes(ckpt: Checkpoint, mappings: list[TensorMapping], types: dict[str, T]) -> list[str]:
    """What happens to a quantized source's layers in quantized output types, one line per (format, type, fate):
    codes kept as they are, or one rounding of the exact dequantization (and why)."""
    fates: dict[tuple[str, str, str], int] = {}
    for m in mappings:
        h, qtype = m.open(ckpt.tensors), types[m.gguf_name]
        fmt = _source_format(h)
        if fmt is None or not is_quantized(qtype):
            continue
        if not hasattr(h, "fmt"):
            why = "experts stacked into one tensor are written from their dequantization"
        else:
            why = h.why_not(qtype) if hasattr(h, "why_not") else f"no ggml type holds {fmt} codes"
        fates[(fmt, qtype.name, why or "")] = fates.get((fmt, qtype.name, why or ""), 0) + 1
    return [
        f"{fmt}: {n} tensor(s) {'keep their codes exactly as' if not why else 'rounded once to'} {qtype}"
        + (f" from their exact dequantization ({why})" if why else "")
        for (fmt, qtype, why), n in fates.items()
    ]


def padded(n: int, align: int) -> int:
    return -(-n // align) * align


def add_record_keys(
    plan: GGUFPlan, target: Target | None, chosen: list[T], file_type: int, overrides: TypeOverrides | None
) -> None:
    """After every other key, in convert and quantize alike: quantize.target.* (`chosen`: the types of the tensors
    the target chose, those the file type's mixture quantizes, in the file's tensor order) and quantize.plan.*,
    what validate rebuilds the expected tensor types from."""
    for key, vtype, value, sub in (target_keys(target, chosen) if target else []) + plan_keys(file_type, overrides):
        plan.add(key, vtype, value, sub)


def header_size(plan: GGUFPlan, shapes: list[tuple[str, tuple[int, ...]]], *record) -> int:
    """The bytes before the tensor data (padded to the alignment) of the file `plan` becomes once the record keys
    (`record`: add_record_keys' arguments after the plan) and the tensors `shapes` are added: they do not depend
    on the types the target will choose."""
    probe = GGUFPlan(kv=dict(plan.kv))
    add_record_keys(probe, *record)
    probe.tensors = [PlannedTensor(n, tuple(s), T.F32, list) for n, s in shapes]
    return len(probe.header_bytes())


def target_result(target: Target, tp: TargetPlan) -> dict:
    """What a ConvertResult reports of a target plan (the card prints it)."""
    return {**target.to_dict(), "budget_bytes": tp.budget, "tensor_bytes": tp.nbytes, "types": tp.summary()}


def add_imatrix_keys(plan: GGUFPlan, path: Path, imatrix: dict[str, np.ndarray]) -> None:
    """The quantize.imatrix.* keys llama.cpp's quantizer writes, so users can tell which imatrix was used."""
    plan.add_string("quantize.imatrix.file", str(path))
    plan.add("quantize.imatrix.entries_count", GGUFValueType.INT32, len(imatrix))
