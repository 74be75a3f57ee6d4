"""`exaone-gguf validate`: which validator a file gets (a projector's, --against's, or the source's) and one
report of it and of the projector given with --mmproj."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exaone_gguf.checkpoint.hub import resolve_source
from exaone_gguf.commands import Ui, parse_thresholds
from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError, ValidationFailed


@dataclass(frozen=True)
class ValidateJob:
    model: Path
    threads: int
    reference: Path | None = None  # the source checkpoint (or Hub repo id)
    against: Path | None = None  # or a higher-precision GGUF
    mmproj: Path | None = None  # the text model's vision projector, checked with it
    device: str = "cpu"
    json_path: Path | None = None
    text: Path | None = None
    max_tokens: int = 256
    thresholds: dict[str, float] = field(default_factory=dict)
    quality_gate: bool = False
    imatrix: Path | None = None
    ctx: int = 512
    chunks: int | None = None
    structure: bool = False  # the reference forward on a quantized file's own weights too

    @classmethod
    def parse(
        cls, model, reference, device, json_path, text, max_tokens, threshold, quality_gate, imatrix, against, ctx,
        chunks, threads, mmproj, structure=False,
    ) -> ValidateJob:  # fmt: skip
        if against is not None and reference is not None:
            raise InputError("--against and --reference: give one of them (a base GGUF or the source checkpoint).")
        if structure and reference is None:
            raise InputError(
                "--structure needs --reference: the forward runs the source's config on the file's weights."
            )
        return cls(
            model, resolve_threads(threads), reference, against, mmproj, device, json_path, text, max_tokens,
            parse_thresholds(threshold), quality_gate, imatrix, ctx, chunks, structure,
        )  # fmt: skip


def validate(job: ValidateJob, ui: Ui):
    """Validate, show the report (and write it with --json); ValidationFailed when a check fails."""
    from exaone_gguf.validate import validate as run_validate
    from exaone_gguf.validate.mmproj import is_mmproj, validate_mmproj

    source = resolve_source(job.reference) if job.reference is not None else None
    if job.against is None and job.mmproj is None and is_mmproj(job.model):
        report = validate_mmproj(job.model, source, threads=job.threads)
    elif job.against is not None:
        from exaone_gguf.validate.against import validate_against

        report = validate_against(
            job.model,
            job.against,
            job.text,
            job.ctx,
            job.chunks,
            threshold_overrides=job.thresholds,
            quality_gate=job.quality_gate,
            threads=job.threads,
        )
    else:
        report = run_validate(
            job.model,
            source,
            device=job.device,
            text=job.text,
            max_tokens=job.max_tokens,
            threshold_overrides=job.thresholds,
            threads=job.threads,
            quality_gate=job.quality_gate,
            imatrix=job.imatrix,
            structure=job.structure,
        )
    if job.mmproj is not None:  # the projector, run by libmtmd with this text model, and both files together
        vision = validate_mmproj(job.mmproj, source, text_model=job.model, threads=job.threads, generate=True)
        report.checks += vision.checks
        report.seconds += vision.seconds
    ui.report(report)
    if job.json_path:
        report.write_json(job.json_path)
    if not report.passed:
        failed = [c.name for c in report.checks if c.status == "fail"]
        raise ValidationFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    return report
