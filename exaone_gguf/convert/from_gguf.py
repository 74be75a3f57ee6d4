"""`exaone-gguf quantize IN.gguf OUT.gguf TYPE`: an F32/F16/BF16 GGUF to a quantized one, streaming.

Metadata is carried over (general.file_type and the quantize.imatrix.* keys are rewritten, as
llama.cpp's quantizer does); each tensor gets the type llama.cpp's mixture rules give it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from gguf import GGML_QUANT_VERSION, GGUFValueType, Keys
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint.finite import all_finite
from exaone_gguf.convert.pipeline import (
    CHUNK_BYTES,
    LOOKUP_TENSORS,
    ConvertResult,
    add_imatrix_keys,
    add_record_keys,
    convert_rows_at,
    header_size,
    padded,
    target_result,
)
from exaone_gguf.errors import InputError
from exaone_gguf.families import family_of_gguf_arch
from exaone_gguf.gguf_io import GGUFFile, TensorInfo, read_gguf
from exaone_gguf.gguf_io.writer import ALIGNMENT, GGUFPlan, PlannedTensor, check_output_path, tensor_nbytes, write_gguf
from exaone_gguf.quantize.formats import file_type, is_quantized
from exaone_gguf.quantize.imatrix import load_imatrix, weights_for
from exaone_gguf.quantize.mixtures import PLAN, TypeOverrides, allows_quantization, plan_types
from exaone_gguf.quantize.target import Probe, Target, TargetPlan, TargetTensor, check_target_use, plan_target

FLOATS = (T.F32, T.F16, T.BF16)


def stream_gguf_tensor(
    f: GGUFFile, t: TensorInfo, qtype: T, threads: int, imatrix: np.ndarray | None
) -> Iterator[np.ndarray]:
    n_rows = t.n_elements // t.shape[0]
    if qtype == t.tensor_type:  # kept as it is: copy the bytes
        yield f.tensor_bytes(t)
        return
    step = max(1, CHUNK_BYTES // (4 * t.shape[0]))
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        yield convert_rows_at(f.rows_f32(t, start, stop), start, n_rows, qtype, threads, imatrix)


def nonfinite_tensors(f: GGUFFile, src: Path, allow: bool = False) -> list[str]:
    """Names of the float tensors of `f` holding NaN or infinity; raises InputError at the first one unless
    `allow`. (A quantized input's blocks are not scanned: their fp16 scales are not worth a second format.)"""
    found = []
    for t in f.tensors:
        if all_finite(f.tensor_bytes(t), t.tensor_type.name):  # ggml's F32/F16/BF16 are safetensors' names too
            continue
        if not allow:
            raise InputError(
                f"{src}: tensor '{t.name}' contains NaN or infinity; the file is damaged (convert it again from "
                "the checkpoint), or pass --allow-nonfinite to quantize anyway."
            )
        found.append(t.name)
    return found


def quantize_gguf(
    src: Path | str,
    out: Path | str,
    ftype: str,
    threads: int = 1,
    imatrix: Path | str | None = None,
    allow_requantize: bool = False,
    force: bool = False,
    progress: Callable[[PlannedTensor, int], None] | None = None,
    on_plan: Callable[[GGUFPlan], None] | None = None,
    allow_nonfinite: bool = False,
    overrides: TypeOverrides | None = None,
    target: Target | None = None,
    probe: Probe | None = None,
    no_mtp: bool = False,
) -> ConvertResult:
    """`no_mtp`: leave out the MTP blocks (the last nextn_predict_layers blocks), as `convert --no-mtp` writes
    the file: block_count without them, nextn_predict_layers 0 or absent as the family's converter writes it."""
    src, out = Path(src), Path(out)
    ft = file_type(ftype)
    check_target_use(target, ft.name, imatrix is not None, overrides)
    f = read_gguf(src)
    check_output_path(out, [src] + ([Path(imatrix)] if imatrix else []), force)
    arch = f.get("general.architecture")
    if not isinstance(arch, str):
        raise InputError(f"{src}: general.architecture is missing; this is not a model file.")
    n_layers = int(f.get(f"{arch}.block_count", 0) or 0)
    nextn_key = Keys.LLM.NEXTN_PREDICT_LAYERS.format(arch=arch)
    nextn = int(f.get(nextn_key, 0) or 0) if no_mtp else 0
    n_layers -= nextn
    mtp = tuple(f"blk.{b}." for b in range(n_layers, n_layers + nextn))
    tensors = [t for t in f.tensors if not t.name.startswith(mtp)]
    fam = family_of_gguf_arch(arch, f.get("tokenizer.ggml.pre"))
    # --no-mtp: block_count without the MTP blocks; nextn_predict_layers 0 where the family always writes it
    rewritten_mtp = {f"{arch}.block_count": n_layers} | ({nextn_key: 0} if fam is None or fam.nextn_always else {})
    dropped_keys = {nextn_key} - rewritten_mtp.keys() if nextn else set()
    already = [t for t in tensors if t.tensor_type not in FLOATS and allows_quantization(t.name, t.shape)]
    if already and not allow_requantize:
        raise InputError(
            f"{src}: is already quantized ({already[0].name} is {already[0].tensor_type.name}); quantize from an "
            "F32/F16/BF16 GGUF, or pass --allow-requantize to accept a second rounding."
        )
    nonfinite = nonfinite_tensors(f, src, allow_nonfinite)  # as convert: before a byte is written
    weights = load_imatrix(imatrix) if imatrix else None
    heads, kv = f.get(f"{arch}.attention.head_count"), f.get(f"{arch}.attention.head_count_kv")
    types = plan_types(
        [(t.name, t.shape, t.tensor_type) for t in tensors],
        ft.name,
        arch,
        n_layers,
        n_gqa=heads // kv if heads and kv else None,
        has_imatrix=weights is not None,
        n_expert=int(f.get(f"{arch}.expert_count", 0) or 0),
        overrides=overrides,
    )

    plan = GGUFPlan()
    rewritten = {"general.quantization_version": GGML_QUANT_VERSION, "general.file_type": int(ft.ftype)}
    for key, value in f.metadata.items():  # same order as the input, so convert and quantize agree byte for byte
        if key.startswith(("quantize.imatrix.", "quantize.target.", PLAN)) or key in dropped_keys:
            continue
        if nextn and key in rewritten_mtp:
            plan.add(key, f.types[key][0], rewritten_mtp[key])
        elif key in rewritten:
            plan.add(key, GGUFValueType.UINT32, rewritten.pop(key))
        else:
            vtype, sub = f.types[key]
            plan.add(key, vtype, value, sub)
    for key, value in rewritten.items():
        plan.add(key, GGUFValueType.UINT32, value)
    if weights is not None:
        add_imatrix_keys(plan, Path(imatrix), weights)
    chosen = [t.name for t in tensors if is_quantized(types[t.name])]  # what a target chooses
    tplan = None
    if target is not None:
        shapes = [(t.name, tuple(t.shape)) for t in tensors]
        header = header_size(plan, shapes, target, [types[n] for n in chosen], int(ft.ftype), overrides)
        tplan = target_types(f, tensors, src, types, target, weights, threads, probe, header)
        types.update(tplan.types)
    add_record_keys(plan, target, [types[n] for n in chosen], int(ft.ftype), overrides)
    for t in tensors:
        q = types[t.name]
        w = weights_for(weights, t.name, t.shape) if q not in FLOATS else None
        plan.add_tensor(t.name, t.shape, q, lambda t=t, q=q, w=w: stream_gguf_tensor(f, t, q, threads, w))
    if on_plan:
        on_plan(plan)
    size = write_gguf(plan, out, progress)
    return ConvertResult(
        output=out,
        arch=arch,
        outtype=ft.name,
        file_type=int(ft.ftype),
        n_tensors=len(plan.tensors),
        n_params=sum(t.n_elements for t in tensors),
        file_size=size,
        tensor_types={t.name: t.qtype.name for t in plan.tensors},
        nonfinite=nonfinite,
        threads=threads,
        target=target_result(target, tplan) if tplan is not None else None,
    )


def target_types(
    f: GGUFFile,
    kept: list[TensorInfo],
    src: Path,
    types: dict[str, T],
    target: Target,
    weights: dict[str, np.ndarray] | None,
    threads: int,
    probe: Probe | None = None,
    header: int = 0,
) -> TargetPlan:
    """--target-bpw / --target-size over the tensors the file type quantizes (the others keep their type) among
    the `kept` tensors of `f`. `header`: the bytes before the tensor data, which a --target-size budget counts."""
    chosen = [t for t in kept if is_quantized(types[t.name])]
    align = ALIGNMENT if target.size is not None else 1
    header = header if target.size is not None else 0  # --target-bpw counts tensor data only
    fixed = header + sum(
        padded(tensor_nbytes(types[t.name], tuple(t.shape)), align) for t in kept if not is_quantized(types[t.name])
    )
    tensors = [
        TargetTensor(
            t.name,
            tuple(t.shape),
            lambda rows, t=t: _rows(f, t, rows),
            weights_for(weights, t.name, t.shape),
            t.name in LOOKUP_TENSORS,
        )
        for t in chosen
    ]
    return plan_target(
        target,
        tensors,
        fixed,
        sum(t.n_elements for t in kept),
        str(src),
        threads,
        probe,
        default=types,
        align=align,
    )


def _rows(f: GGUFFile, t: TensorInfo, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (sorted) of tensor t as float32 [len(rows), ne0]: one read when they are all of them."""
    if len(rows) and rows[0] == 0 and rows[-1] == len(rows) - 1:
        return f.rows_f32(t, 0, len(rows))
    return np.concatenate([f.rows_f32(t, int(r), int(r) + 1) for r in rows])
