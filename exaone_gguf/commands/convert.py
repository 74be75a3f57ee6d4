"""`exaone-gguf convert`: one file (or its shards) through convert.driver, a release folder through publish, or
the vision projector through vision; validated when asked, then pushed with --push."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exaone_gguf.checkpoint.hub import resolve_source
from exaone_gguf.commands import Interrupted, Ui, parse_overrides
from exaone_gguf.convert import driver
from exaone_gguf.convert.options import ConvertOptions, parse_outtypes, parse_split_limits
from exaone_gguf.convert.pipeline import ConvertResult
from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError, ValidationFailed
from exaone_gguf.publish import PublishResult, publish, report_path, validate_output
from exaone_gguf.quantize.mixtures import TypeOverrides
from exaone_gguf.quantize.target import Target, parse_target

__all__ = ["ConvertJob", "convert", "is_release", "run"]

_TEXT_ONLY = (  # convert flags that apply to the text model, not to --mmproj, in the order they are named
    "imatrix split_max_size split_max_tensors arch allow_nonfinite pure tensor_type output_tensor_type "
    "token_embedding_type leave_output_tensor target_bpw target_size no_mtp"
).split()


@dataclass(frozen=True)
class ConvertJob:
    source: Path  # a checkpoint directory or a Hub repo id (resolved when the command runs)
    output: str  # a file, or a release folder (OUT_DIR/)
    types: tuple[str, ...]  # the output types, parsed once ('auto' kept); --mmproj: the one type as given
    threads: int
    split: tuple[int | None, int | None] = (None, None)  # bytes, tensors per shard
    imatrix: Path | None = None
    validate: bool = False  # --validate, or --push (only a proven release is pushed)
    arch: str | None = None
    force: bool = False
    as_json: bool = False
    allow_nonfinite: bool = False
    overrides: TypeOverrides | None = None
    mmproj: bool = False
    target: Target | None = None
    push: str | None = None
    private: bool = False
    quantized_by: str | None = None
    no_mtp: bool = False

    @classmethod
    def parse(
        cls, src_dir, output_arg, outtype, threads, imatrix, split_max_size, split_max_tensors, validate_out, arch,
        force, as_json, allow_nonfinite, tensor_type, output_tensor_type, token_embedding_type, pure,
        leave_output_tensor, mmproj, target_bpw, target_size, push_to, private, quantized_by, no_mtp,
    ) -> ConvertJob:  # fmt: skip
        """The command line's values, checked once (InputError: one sentence, exit 2)."""
        target = parse_target(target_bpw, target_size)
        types = (outtype,) if mmproj else tuple(parse_outtypes(outtype))
        if target is not None and len(types) != 1:
            raise InputError(f"{target.describe()}: give one --outtype (the file type it labels), not a list.")
        if private and push_to is None:
            raise InputError("--private: applies to the repository that --push REPO_ID creates; add --push.")
        release = is_release(output_arg, types) and not mmproj
        for flag, given in (("--push", push_to is not None), ("--quantized-by", quantized_by is not None)):
            if given and not release:
                raise InputError(f"{flag}: applies to a release folder; give -o OUT_DIR/ (ending in '/').")
        given = dict(imatrix=imatrix, split_max_size=split_max_size, split_max_tensors=split_max_tensors, arch=arch)
        given |= dict(allow_nonfinite=allow_nonfinite, pure=pure, tensor_type=tensor_type, target_bpw=target_bpw)
        given |= dict(output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type)
        given |= dict(leave_output_tensor=leave_output_tensor, target_size=target_size, no_mtp=no_mtp)
        text_only = [f"--{k.replace('_', '-')}" for k in _TEXT_ONLY if given[k]]
        if mmproj and text_only:
            raise InputError(f"{text_only[0]}: applies to the text model, not to --mmproj; leave it out.")
        split = parse_split_limits(split_max_size, split_max_tensors)
        return cls(
            src_dir, output_arg, types, resolve_threads(threads), split, imatrix, validate_out or push_to is not None,
            arch, force, as_json, allow_nonfinite,
            parse_overrides(tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor),
            mmproj, target, push_to, private, quantized_by, no_mtp,
        )  # fmt: skip

    def options(self, ui: Ui, on_plan=None, progress=None) -> ConvertOptions:
        """The job as convert.driver's and publish's options, with the Ui's callbacks."""
        return ConvertOptions(
            outtype=list(self.types),
            threads=self.threads,
            imatrix=self.imatrix,
            arch=self.arch,
            overrides=self.overrides,
            target=self.target,
            split_max_size=self.split[0],
            split_max_tensors=self.split[1],
            allow_nonfinite=self.allow_nonfinite,
            no_mtp=self.no_mtp,
            force=self.force,
            validate=self.validate,
            quantized_by=self.quantized_by,
            progress=progress,
            on_plan=on_plan,
            on_validated=ui.report,
            on_warning=ui.warning,
        )


def is_release(output: Path | str, types: list[str] | tuple[str, ...]) -> bool:
    """Several types, or an output that is (or is written as) a directory: a release into that folder."""
    return len(types) > 1 or Path(output).is_dir() or str(output).endswith(("/", "\\"))


def run(src: Path | str, output: Path | str, opts: ConvertOptions) -> ConvertResult | PublishResult:
    """A release into the folder `output` (publish), or the one file `output` (or its shards) through
    convert.driver.convert, validated against `src` when opts.validate (the report is kept beside it and set as
    result.report; the caller decides what a failed report means)."""
    if is_release(output, opts.outtypes()):
        return publish(src, output, opts)
    output = Path(output)
    report_json = report_path(output) if opts.validate else None
    if report_json is not None and report_json.exists() and not opts.force:
        raise InputError(f"{report_json}: already exists; pass --force to overwrite it.")
    result = driver.convert(src, output, opts)
    if report_json is not None:
        result.report = validate_output(result.output, Path(src), report_json, opts.device, opts.threads, opts.imatrix)
        if opts.on_validated:
            opts.on_validated(result.report)
    return result


def convert(job: ConvertJob, ui: Ui) -> None:
    if job.push is not None:  # the token and the namespace before hours of converting
        from exaone_gguf.publish.push import check_access

        check_access(job.push, job.private)
    src = resolve_source(job.source)
    if job.mmproj:
        return _convert_mmproj(job, src, ui)
    with ui.writing(f"converting {src.name}") as (on_plan, on_chunk):
        result = run(src, job.output, job.options(ui, on_plan, on_chunk))
    if isinstance(result, PublishResult):
        warn_nonfinite(ui, result.nonfinite, "converted")
        ui.show(result, job.as_json and job.push is None)
        if job.push is not None:
            from exaone_gguf.commands.push import PushJob, push

            try:
                pushed = push(PushJob(result.out_dir, job.push, private=job.private), ui)
            except Interrupted as e:
                raise Interrupted(f"the release in {result.out_dir} is complete; {e.after}") from None
            if job.as_json:  # one object: the release, and where it went
                ui.show(result.to_dict() | {"push": pushed.to_dict()}, True)
        return
    for note in result.notes:  # a quantized source: which layers keep their codes, which are rounded once
        ui.note(note)
    if job.split != (None, None):
        ui.shards(result.files)
    if result.report is not None and not result.report.passed:
        ui.show(result, job.as_json)
        raise ValidationFailed(f"{result.output} failed validation; see {report_path(result.output)}.")
    warn_nonfinite(ui, result.nonfinite, "converted")
    ui.show(result, job.as_json)


def _convert_mmproj(job: ConvertJob, src: Path, ui: Ui) -> None:
    """convert --mmproj: the vision projector file, validated against the source with --validate."""
    from exaone_gguf.validate.mmproj import validate_mmproj
    from exaone_gguf.vision import convert_mmproj

    output = Path(job.output)
    with ui.writing(f"converting {src.name} (projector)") as (on_plan, on_chunk):
        result = convert_mmproj(src, output, job.types[0], force=job.force, progress=on_chunk, on_plan=on_plan)
    if job.validate:
        report = validate_mmproj(result.output, src, threads=job.threads)
        report.write_json(output.with_name(output.name.removesuffix(".gguf") + ".validation.json"))
        ui.report(report)
        if not report.passed:
            ui.show(result, job.as_json)
            raise ValidationFailed(f"{result.output} failed validation; see its .validation.json report.")
    ui.show(result, job.as_json)


def warn_nonfinite(ui: Ui, names: list[str], done: str) -> None:
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        ui.warning(
            f"{len(names)} tensor(s) contain NaN or infinity ({shown}); {done} anyway because of --allow-nonfinite."
        )
