"""The one convert driver: a checkpoint to one GGUF file, to its shards, or (publish.publish, on top of the same
stages) to a release of several types, all described by one ConvertOptions object.

The stages, shared by every kind of run:
1. `ConvertOptions.outtypes()` / `.split_limits()`: refuse bad options before any work;
2. `load_source(src, opts)`: the checkpoint, its config's keys checked against what its family models, its MTP
   blocks dropped with `no_mtp`; then the caller's own output-path checks;
3. `plan_variants_for(ckpt, types, opts)`: the imatrix and every output type's plan (one read of the source
   serves them all);
4. `write_planned(ckpt, variants, opts, total, hash)`: the NaN/inf scan, then gguf_io's one write path.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.checkpoint.finite import check_finite
from exaone_gguf.convert.multiwrite import Variant, assign_paths, plan_variants, write_variants
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.convert.pipeline import ConvertResult
from exaone_gguf.errors import InputError
from exaone_gguf.families import check_config_keys, load_checkpoint, without_mtp
from exaone_gguf.gguf_io.writer import check_output_path
from exaone_gguf.model.sensitivity import kld_probe
from exaone_gguf.quantize.imatrix import load_imatrix
from exaone_gguf.quantize.target import split_outtype


def load_source(src: Path, opts: ConvertOptions) -> Checkpoint:
    """Stage 2: the checkpoint; a config key its family cannot run is refused, keys no family knows are named in
    one warning (opts.on_warning); with opts.no_mtp, the spec without its MTP blocks."""
    ckpt = load_checkpoint(src)
    unknown = check_config_keys(ckpt.spec.config, ckpt.spec.config_path)
    if unknown:
        (opts.on_warning or warnings.warn)(
            f"{ckpt.spec.config_path}: unknown config key(s) {', '.join(unknown)}, converted as if absent; "
            f"check that they do not change what {ckpt.spec.architecture} computes."
        )
    return dataclasses.replace(ckpt, spec=without_mtp(ckpt.spec)) if opts.no_mtp else ckpt


def plan_variants_for(ckpt: Checkpoint, types: list[str], opts: ConvertOptions) -> list[Variant]:
    """Stage 3: the imatrix and every output type's plan, no paths yet."""
    weights = load_imatrix(opts.imatrix) if opts.imatrix else None
    wants_target = opts.target is not None or any(split_outtype(t)[1] is not None for t in types)
    probe = kld_probe(ckpt, opts.arch) if wants_target else None  # measured: one reference forward per tensor
    return plan_variants(ckpt, types, opts, weights, probe)


def write_planned(
    ckpt: Checkpoint,
    variants: list[Variant],
    opts: ConvertOptions,
    total: Any,
    hash: bool = False,
) -> tuple[list[str], list[int]]:
    """Stage 4 (paths assigned and checked): refuse NaN/inf weights unless allowed (before a byte is written),
    announce `total` to on_plan, write every variant in one pass. Returns (non-finite tensor names, sizes)."""
    nonfinite = check_finite(ckpt.tensors, opts.allow_nonfinite)
    if opts.on_plan:
        opts.on_plan(total)
    sizes = write_variants(variants, opts.progress, hash=hash)
    return nonfinite, sizes


def convert(src: Path | str, out: Path | str, opts: ConvertOptions | None = None) -> ConvertResult:
    """Convert the checkpoint directory `src` into the GGUF file `out` (quantized types in the same pass), or
    into its shards OUT-00001-of-0000N.gguf when a split limit is given (just OUT when one shard is enough).
    Weights with NaN or infinity are refused unless allowed (then listed in result.nonfinite)."""
    opts = opts or ConvertOptions()
    src, out = Path(src), Path(out)
    types = opts.outtypes()
    if len(types) != 1:
        raise InputError(f"{out}: several output types need an output directory, not a file name.")
    max_bytes, max_tensors = opts.split_limits()
    ckpt = load_source(src, opts)
    if not opts.split:  # the name is known before planning: refuse it before any work
        check_output_path(out, opts.inputs(src), opts.force)
    [v] = plan_variants_for(ckpt, types, opts)
    assign_paths(v, out, max_bytes, max_tensors)
    if opts.split:
        for p in v.paths:
            check_output_path(p, opts.inputs(src), opts.force)
    v.result.nonfinite, [size] = write_planned(ckpt, [v], opts, v.plan)
    v.result.output, v.result.file_size, v.result.files = v.paths[0], size, list(v.paths)
    return v.result
