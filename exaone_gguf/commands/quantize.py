"""`exaone-gguf quantize`: a GGUF file to another type (convert.from_gguf), a target plan measured against the
source checkpoint (--reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exaone_gguf.checkpoint.hub import resolve_source
from exaone_gguf.commands import Ui, parse_overrides
from exaone_gguf.commands.convert import warn_nonfinite
from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError
from exaone_gguf.quantize.mixtures import TypeOverrides
from exaone_gguf.quantize.target import Target, parse_target


@dataclass(frozen=True)
class QuantizeJob:
    source: Path
    output: Path
    qtype: str
    threads: int
    imatrix: Path | None = None
    allow_requantize: bool = False
    force: bool = False
    as_json: bool = False
    allow_nonfinite: bool = False
    overrides: TypeOverrides | None = None
    target: Target | None = None
    reference: Path | None = None  # the source checkpoint a target plan measures against
    no_mtp: bool = False

    @classmethod
    def parse(
        cls, input_gguf, output, qtype, imatrix, threads, allow_requantize, force, as_json, allow_nonfinite,
        tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor, target_bpw, target_size,
        reference, no_mtp,
    ) -> QuantizeJob:  # fmt: skip
        threads = resolve_threads(threads)
        overrides = parse_overrides(tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor)
        target = parse_target(target_bpw, target_size)
        if target is not None and reference is None:
            raise InputError(
                f"{target.describe()} measures each tensor's effect on the logits; pass --reference SRC_DIR "
                f"(the checkpoint {input_gguf} was converted from)."
            )
        return cls(
            input_gguf, output, qtype, threads, imatrix, allow_requantize, force, as_json, allow_nonfinite,
            overrides, target, reference, no_mtp,
        )  # fmt: skip


def quantize(job: QuantizeJob, ui: Ui) -> None:
    from exaone_gguf.convert.from_gguf import quantize_gguf

    probe = None
    if job.target is not None:
        from exaone_gguf.families import load_checkpoint
        from exaone_gguf.model.sensitivity import kld_probe  # one reference forward per tensor

        probe = kld_probe(load_checkpoint(resolve_source(job.reference)), None)
    with ui.writing(f"quantizing {job.source.name}") as (on_plan, on_chunk):
        result = quantize_gguf(
            job.source,
            job.output,
            job.qtype,
            threads=job.threads,
            imatrix=job.imatrix,
            allow_requantize=job.allow_requantize,
            force=job.force,
            allow_nonfinite=job.allow_nonfinite,
            overrides=job.overrides,
            target=job.target,
            probe=probe,
            no_mtp=job.no_mtp,
            progress=on_chunk,
            on_plan=on_plan,
        )
    warn_nonfinite(ui, result.nonfinite, "quantized")
    ui.show(result, job.as_json)
