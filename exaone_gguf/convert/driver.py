"""The one convert driver: a checkpoint to one GGUF file, to its shards, or (publish.publish, on top of the same
stages) to a release of several types, all described by one ConvertOptions object.

The stages, shared by every kind of run:
1. `ConvertOptions.outtypes()` / `.split_limits()`: refuse bad options before any work;
2. `load_source(src, opts)`: the checkpoint, its config's keys checked against what its family models, its MTP
   blocks dropped with `no_mtp`; then the caller's own output-path checks;
3. `plan_variants_for(ckpt, types, opts)`: the imatrix and every output type's plan (one read of the source
   serves them all);
4. `write_planned(ckpt, variants, opts, hash)`: the NaN/inf scan, then gguf_io's one write path.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.checkpoint.finite import check_finite
from exaone_gguf.convert.multiwrite import Variant, assign_paths, plan_variants, write_variants
from exaone_gguf.convert.pipeline import ConvertResult
from exaone_gguf.errors import InputError
from exaone_gguf.families import check_config_keys, load_checkpoint, without_mtp
from exaone_gguf.gguf_io.split import parse_split_size
from exaone_gguf.gguf_io.writer import PlannedTensor, check_output_path
from exaone_gguf.quantize.imatrix import load_imatrix
from exaone_gguf.quantize.mixtures import TypeOverrides, file_type_value
from exaone_gguf.quantize.target import Probe, Target, split_outtype


@dataclass
class ConvertOptions:
    """Everything a convert run takes besides its source and output (the CLI's `convert` flags)."""

    outtype: str | list[str] = "auto"  # one type, or several ("bf16,q8_0" or a list) for a release
    threads: int = 1
    imatrix: Path | str | None = None
    arch: str | None = None  # another GGUF architecture, e.g. EXAONE 3.x as "llama"
    overrides: TypeOverrides | None = None  # llama-quantize's per-tensor controls (--tensor-type, --pure, ...)
    target: Target | None = None  # --target-bpw / --target-size (quantize.target)
    # (checkpoint, arch) -> probe({gguf_name: rows}) -> mean KLD: the measured sensitivity a target plan uses
    # (validate.sensitivity.kld_probe; given by the CLI, which sits above validate)
    sensitivity: Callable[[Checkpoint, str | None], Probe] | None = None
    split_max_size: str | int | None = None
    split_max_tensors: int | None = None
    allow_nonfinite: bool = False
    no_mtp: bool = False  # leave the MTP blocks out (llama.cpp loads them and never runs them)
    force: bool = False
    validate: bool = False  # validate each output against the source (publish.run / publish.publish)
    device: str = "cpu"  # where validation runs
    quantized_by: str | None = None  # a release's model card credits them (publish)
    progress: Callable[[PlannedTensor, int], None] | None = None  # (tensor, bytes just written)
    on_plan: Callable[[Any], None] | None = None  # once, before writing: an object whose data_bytes is the total
    on_validated: Callable[[Any], None] | None = None  # each validation report
    on_warning: Callable[[str], None] | None = None  # a sentence about the source (default: warnings.warn)

    def outtypes(self) -> list[str]:
        """'bf16,q8_0, Q4_K_M' (or a list) -> ['bf16', 'q8_0', 'q4_k_m']; unknown or repeated names are refused."""
        text = self.outtype if isinstance(self.outtype, str) else ",".join(self.outtype)
        return parse_outtypes(text)

    @property
    def split(self) -> bool:
        return self.split_max_size is not None or self.split_max_tensors is not None

    def split_limits(self) -> tuple[int | None, int | None]:
        """(bytes, tensors) per shard, at most one of them given."""
        if self.split_max_size is not None and self.split_max_tensors is not None:
            raise InputError("--split-max-size and --split-max-tensors: give one of them, not both.")
        size = parse_split_size(self.split_max_size) if isinstance(self.split_max_size, str) else self.split_max_size
        if self.split_max_tensors is not None and self.split_max_tensors < 1:
            raise InputError(
                f"--split-max-tensors {self.split_max_tensors}: give a positive number of tensors per shard."
            )
        return size, self.split_max_tensors

    def inputs(self, src: Path) -> list[Path]:
        """The files and folders no output may overwrite or lie in."""
        return [Path(src)] + ([Path(self.imatrix)] if self.imatrix else [])


def parse_outtypes(text: str) -> list[str]:
    """'bf16,q8_0, Q4_K_M' -> ['bf16', 'q8_0', 'q4_k_m']; unknown or repeated names are refused."""
    types = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not types:
        raise InputError("--outtype: give at least one type, e.g. bf16,q8_0,q4_k_m.")
    for t in types:
        name, _ = split_outtype(t)  # q4_k_m@4.6: a --target-bpw variant (bad numbers raise InputError)
        if name != "auto":
            file_type_value(name)  # raises InputError for an unknown name
    dup = sorted({t for t in types if types.count(t) > 1})
    if dup:
        raise InputError(f"--outtype: {dup[0]} is listed twice; give each type once.")
    return types


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


def plan_variants_for(
    ckpt: Checkpoint, types: list[str], opts: ConvertOptions
) -> tuple[dict[str, np.ndarray] | None, list[Variant]]:
    """Stage 3: the imatrix weights (or None) and every output type's plan, no paths yet."""
    weights = load_imatrix(opts.imatrix) if opts.imatrix else None
    imatrix_file = Path(opts.imatrix) if opts.imatrix else None
    wants_target = opts.target is not None or any(split_outtype(t)[1] is not None for t in types)
    probe = opts.sensitivity(ckpt, opts.arch) if wants_target and opts.sensitivity else None
    return weights, plan_variants(
        ckpt,
        types,
        opts.threads,
        weights,
        imatrix_file,
        arch=opts.arch,
        overrides=opts.overrides,
        target=opts.target,
        probe=probe,
    )


def write_planned(
    ckpt: Checkpoint,
    variants: list[Variant],
    weights: dict[str, np.ndarray] | None,
    opts: ConvertOptions,
    total: Any,
    hash: bool = False,
) -> tuple[list[str], list[int]]:
    """Stage 4 (paths assigned and checked): refuse NaN/inf weights unless allowed (before a byte is written),
    announce `total` to on_plan, write every variant in one pass. Returns (non-finite tensor names, sizes)."""
    nonfinite = check_finite(ckpt.tensors, opts.allow_nonfinite)
    if opts.on_plan:
        opts.on_plan(total)
    sizes = write_variants(ckpt, variants, opts.threads, weights, opts.progress, arch=opts.arch, hash=hash)
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
    weights, [v] = plan_variants_for(ckpt, types, opts)
    assign_paths(v, out, max_bytes, max_tensors)
    if opts.split:
        for p in v.paths:
            check_output_path(p, opts.inputs(src), opts.force)
    v.result.nonfinite, [size] = write_planned(ckpt, [v], weights, opts, v.plan)
    v.result.output, v.result.file_size, v.result.files = v.paths[0], size, list(v.paths)
    return v.result
