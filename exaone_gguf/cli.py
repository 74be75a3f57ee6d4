"""The `exaone-gguf` command line: argument parsing and printing only; the work lives in the packages."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from exaone_gguf.checkpoint.hub import resolve_source
from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError, ValidationFailed
from exaone_gguf.families import demo_recipes, tiny_recipes

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Convert, quantize and validate EXAONE checkpoints as GGUF files for llama.cpp.",
)
err = Console(stderr=True)

THREADS_HELP = "Worker threads (default: every core this process may use; output bytes do not depend on it)."
OUTTYPES = "auto|f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k_m|q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k|iq4_xs"


def _tensor_type_opt():
    return typer.Option(
        [],
        "--tensor-type",
        metavar="PATTERN=TYPE",
        help="Type for the tensors whose name matches the regex PATTERN (repeatable, first match wins), as llama-quantize.",
    )


def _output_tensor_type_opt():
    return typer.Option(
        None, "--output-tensor-type", metavar="TYPE", help="Type for output.weight (as llama-quantize)."
    )


def _token_embedding_type_opt():
    return typer.Option(
        None, "--token-embedding-type", metavar="TYPE", help="Type for token_embd.weight (as llama-quantize)."
    )


def _pure_opt():
    return typer.Option(
        False, "--pure", help="Every quantized tensor gets the default type: no mixture rules (as llama-quantize)."
    )


def _leave_output_opt():
    return typer.Option(
        False, "--leave-output-tensor", help="Keep output.weight in its source type (as llama-quantize)."
    )


def _overrides(tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor):
    """The per-tensor controls as one TypeOverrides (None when no flag is given); bad values raise InputError."""
    from exaone_gguf.quantize.mixtures import TypeOverrides, parse_ggml_type, parse_tensor_types

    ov = TypeOverrides(
        tensor_types=parse_tensor_types(tensor_type),
        output_tensor_type=parse_ggml_type(output_tensor_type, "--output-tensor-type") if output_tensor_type else None,
        token_embedding_type=(
            parse_ggml_type(token_embedding_type, "--token-embedding-type") if token_embedding_type else None
        ),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
    )
    return ov if ov else None


def _target_bpw_opt():
    return typer.Option(
        None,
        "--target-bpw",
        metavar="B",
        help="Choose each tensor's type to reach B bits per weight with the least measured damage (needs --imatrix).",
    )


def _target_size_opt():
    return typer.Option(
        None,
        "--target-size",
        metavar="SIZE",
        help="As --target-bpw, for a file size (the whole file, header included): 700M, 1.5G (decimal).",
    )


def _sensitivity(ckpt, arch):
    """The measured sensitivity a --target-bpw plan uses: one reference forward per tensor (validate layer)."""
    from exaone_gguf.validate.sensitivity import kld_probe

    return kld_probe(ckpt, arch)


def _on_sigterm(signum, frame):  # turn SIGTERM into an exception so partial outputs are cleaned up
    raise SystemExit(128 + signum)


@contextmanager
def _errors(interrupted: str = "nothing was left at the output path.") -> Iterator[None]:
    """Map the project's errors to DESIGN.md's exit codes, with one sentence and no traceback."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except InputError as e:  # escape: messages quote shapes and tokens such as [left, right]
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except ValidationFailed as e:
        err.print(f"[bold red]validation failed:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except OSError as e:  # unreadable input, full disk, permissions: bad input or environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + (e.strerror or str(e)))}.", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        err.print(f"[bold red]interrupted[/]; {escape(interrupted)}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _run_with_progress(label: str, run):
    """Run a writer job (`run(progress=..., on_plan=...)`) under a byte-counting progress bar."""
    with _progress() as progress:
        task = progress.add_task(label, total=None)

        def on_plan(plan):
            progress.update(task, total=plan.data_bytes)

        def on_chunk(tensor, n):
            progress.update(task, advance=n, description=f"{tensor.name:<28}")

        return run(progress=on_chunk, on_plan=on_plan)


def _report_written(result, as_json: bool) -> None:
    if as_json:
        _print_json(result.to_dict())
    err.print(
        f"wrote [bold]{result.output}[/] ({result.arch}, {result.outtype}, {result.n_tensors} tensors, "
        f"{result.file_size / 1e6:.1f} MB)",
        highlight=False,
    )


@app.command()
def convert(
    src_dir: Path = typer.Argument(
        ...,
        metavar="SRC_DIR|REPO_ID",
        help="Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer), or a Hub repo id "
        "(ORG/NAME; fetched into the Hugging Face cache, HF_HUB_OFFLINE honoured); an existing directory wins.",
    ),
    output_arg: str = typer.Option(
        ..., "-o", "--output", help="Output .gguf file, or a directory (OUT_DIR/) for several types."
    ),
    outtype: str = typer.Option(
        "auto", "--outtype", help=f"Tensor type: {OUTTYPES}; a comma list (bf16,q8_0,q4_k_m) writes each into OUT_DIR/."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="llama.cpp importance matrix (GGUF or .dat)."),
    split_max_size: Optional[str] = typer.Option(
        None, "--split-max-size", help="Shards of at most this much tensor data: 5G, 500M (decimal, as gguf-split)."
    ),
    split_max_tensors: Optional[int] = typer.Option(
        None, "--split-max-tensors", min=1, help="Shards of at most N tensors."
    ),
    validate_out: bool = typer.Option(
        False, "--validate", help="Validate each output against SRC_DIR; the JSON report is kept beside it."
    ),
    arch: Optional[str] = typer.Option(
        None,
        "--arch",
        help="GGUF architecture: default the family's own; 'llama' writes EXAONE 3.x for older runtimes.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Convert weights containing NaN or infinity anyway (with a warning)."
    ),
    tensor_type: list[str] = _tensor_type_opt(),
    output_tensor_type: Optional[str] = _output_tensor_type_opt(),
    token_embedding_type: Optional[str] = _token_embedding_type_opt(),
    pure: bool = _pure_opt(),
    leave_output_tensor: bool = _leave_output_opt(),
    mmproj: bool = typer.Option(
        False, "--mmproj", help="Write the vision projector (EXAONE 4.5) instead: f32, f16 (auto), bf16 or q8_0."
    ),
    target_bpw: Optional[float] = _target_bpw_opt(),
    target_size: Optional[str] = _target_size_opt(),
    push_to: Optional[str] = typer.Option(
        None,
        "--push",
        metavar="REPO_ID",
        help="Then push the release to this Hub model repository (validated first, as --validate; see `push`).",
    ),
    private: bool = typer.Option(False, "--private", help="--push: create the repository private."),
    quantized_by: Optional[str] = typer.Option(
        None, "--quantized-by", metavar="NAME", help="A release's model card credits NAME (quantized_by)."
    ),
    no_mtp: bool = typer.Option(
        False,
        "--no-mtp",
        help="Leave out the MTP blocks (K-EXAONE, EXAONE 4.5): llama.cpp loads them, never runs them.",
    ),
) -> None:
    """Convert a checkpoint directory into a GGUF file (quantized types in the same pass)."""
    from exaone_gguf import publish as pub
    from exaone_gguf.convert.driver import ConvertOptions, parse_outtypes
    from exaone_gguf.quantize.target import parse_target

    with _errors():
        target = parse_target(target_bpw, target_size)
        if target is not None and len(parse_outtypes(outtype)) != 1:
            raise InputError(f"{target.describe()}: give one --outtype (the file type it labels), not a list.")
        if private and push_to is None:
            raise InputError("--private: applies to the repository that --push REPO_ID creates; add --push.")
        release = pub.is_release(output_arg, ConvertOptions(outtype=outtype)) and not mmproj
        for flag, given in (("--push", push_to is not None), ("--quantized-by", quantized_by is not None)):
            if given and not release:
                raise InputError(f"{flag}: applies to a release folder; give -o OUT_DIR/ (ending in '/').")
        if push_to is not None:  # the token and the namespace before hours of converting
            from exaone_gguf.publish.push import check_access

            check_access(push_to, private)
        src_dir = resolve_source(src_dir)
        if mmproj:
            _convert_mmproj(src_dir, Path(output_arg), outtype, force, validate_out, as_json, threads, locals())
            return
        overrides = _overrides(tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor)
        opts = ConvertOptions(
            outtype=outtype,
            threads=resolve_threads(threads),
            imatrix=imatrix,
            arch=arch,
            split_max_size=split_max_size,
            split_max_tensors=split_max_tensors,
            allow_nonfinite=allow_nonfinite,
            no_mtp=no_mtp,
            force=force,
            validate=validate_out,
            on_validated=lambda report: report.render(err),
            on_warning=lambda text: err.print(
                f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True
            ),
            overrides=overrides,
            target=target,
            sensitivity=_sensitivity,
            quantized_by=quantized_by,
        )
        opts.validate = opts.validate or push_to is not None  # only a proven release is pushed
        result = _run_with_progress(
            f"converting {src_dir.name}", lambda **kw: pub.run(src_dir, output_arg, _with(opts, **kw))
        )
        if isinstance(result, pub.PublishResult):
            _warn_nonfinite(result.nonfinite, "converted")
            _report_published(result, as_json and push_to is None)
            if push_to is not None:
                from exaone_gguf.publish.push import again

                with _errors(
                    interrupted=f"the release in {result.out_dir} is complete; {again(result.out_dir, push_to)}."
                ):
                    pushed = _push_and_report(result.out_dir, push_to, False, private=private)
                if as_json:  # one object: the release, and where it went
                    _print_json(result.to_dict() | {"push": pushed.to_dict()})
            return
        for note in result.notes:  # a quantized source: which layers keep their codes, which are rounded once
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        if opts.split:
            err.print(f"{len(result.files)} shard(s): {', '.join(p.name for p in result.files)}", highlight=False)
        if result.report is not None and not result.report.passed:
            _report_written(result, as_json)
            raise ValidationFailed(f"{result.output} failed validation; see {pub.report_path(result.output)}.")
        _warn_nonfinite(result.nonfinite, "converted")
        _report_written(result, as_json)


def _convert_mmproj(src_dir, output, outtype, force, validate_out, as_json, threads, flags) -> None:
    """convert --mmproj: the vision projector file, validated against the source with --validate."""
    from exaone_gguf.validate.mmproj import validate_mmproj
    from exaone_gguf.vision import convert_mmproj

    text_only = ("imatrix", "split_max_size", "split_max_tensors", "arch", "allow_nonfinite", "pure")
    text_only += ("tensor_type", "output_tensor_type", "token_embedding_type", "leave_output_tensor")
    text_only += ("target_bpw", "target_size", "no_mtp")
    given = [f"--{k.replace('_', '-')}" for k in text_only if flags.get(k)]
    if given:
        raise InputError(f"{given[0]}: applies to the text model, not to --mmproj; leave it out.")
    result = _run_with_progress(
        f"converting {src_dir.name} (projector)",
        lambda **kw: convert_mmproj(src_dir, output, outtype, force=force, **kw),
    )
    if validate_out:
        report = validate_mmproj(result.output, src_dir, threads=resolve_threads(threads))
        report.write_json(output.with_name(output.name.removesuffix(".gguf") + ".validation.json"))
        report.render(err)
        if not report.passed:
            _report_written(result, as_json)
            raise ValidationFailed(f"{result.output} failed validation; see its .validation.json report.")
    _report_written(result, as_json)


def _with(opts, **callbacks):
    """`opts` with the progress callbacks of _run_with_progress."""
    return dataclasses.replace(opts, **callbacks)


def _warn_nonfinite(names: list[str], done: str) -> None:
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        err.print(
            f"[bold yellow]warning:[/] {len(names)} tensor(s) contain NaN or infinity "
            f"({escape(shown)}); {done} anyway because of --allow-nonfinite.",
            highlight=False,
            soft_wrap=True,
        )


def _report_published(result, as_json: bool) -> None:
    if as_json:
        _print_json(result.to_dict())
    for v in result.variants:
        extra = f", mean KLD {v.mean_kld:.5f}, same top-1 {v.same_top1:.1f}%" if v.mean_kld is not None else ""
        err.print(
            f"wrote [bold]{v.files[0]}[/] ({v.outtype}, {v.size / 1e6:.1f} MB, {len(v.files)} file(s){extra})",
            highlight=False,
        )
    err.print(f"card {result.card}, manifest {result.manifest} ({result.seconds:.1f} s)", highlight=False)


def _push_and_report(release_dir: Path, repo_id: str, as_json: bool, **kw):
    """Push a release under a byte-counting progress bar per step, then say what was sent and where."""
    from huggingface_hub.utils import disable_progress_bars

    from exaone_gguf.publish.push import push

    disable_progress_bars()  # this bar shows the upload; huggingface_hub's own would interleave with it
    with _progress() as bar:
        tasks = []

        def on_stage(label, total):
            tasks.append(bar.add_task(label, total=total))

        result = push(
            release_dir,
            repo_id,
            on_stage=on_stage,
            progress=lambda name, n: bar.update(tasks[-1], advance=n, description=f"{name:<36}"),
            **kw,
        )
    if as_json:
        _print_json(result.to_dict())
    if result.unlisted:
        err.print(f"not in SHA256SUMS, not pushed: {escape(', '.join(result.unlisted))}", highlight=False)
    if result.remote_only:
        err.print(f"left on the Hub (not in this release): {escape(', '.join(result.remote_only))}", highlight=False)
    if not result.validated:
        err.print("[bold yellow]warning:[/] pushed with --force: the release did not pass validation", highlight=False)
    sent = result.to_send
    if result.dry_run:
        for f in result.files:
            err.print(f"  {f.status:<14} {f.size:>15,} bytes  {escape(f.name)}", highlight=False)
        action = "create the repository and " if result.created else ""
        err.print(
            f"dry run: would {action}send {len(sent)} file(s), {sum(f.size for f in sent):,} bytes, to {result.url}",
            highlight=False,
        )
    elif not sent:
        err.print(f"{result.url} is up to date ({len(result.files)} files already there)", highlight=False)
    else:
        size = sum(f.size for f in sent)
        err.print(
            f"pushed {len(sent)} of {len(result.files)} files ({size:,} bytes) to [bold]{result.url}[/]; "
            "the Hub's sizes and hashes match",
            highlight=False,
        )
    return result


@app.command("push")
def push_cmd(
    release_dir: Path = typer.Argument(..., metavar="RELEASE_DIR", help="A release folder (`convert -o OUT_DIR/`)."),
    repo_id: str = typer.Argument(..., metavar="REPO_ID", help="The Hub model repository, OWNER/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repository private (when it does not exist)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Every check, then list what would be sent (with sizes); send and create nothing."
    ),
    force: bool = typer.Option(
        False, "--force", help="Push a release whose validation failed or that was never validated."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Upload a validated release folder to a model repository on the Hugging Face Hub (token: HF_TOKEN or
    `hf auth login`); only what the repository lacks is sent, and the remote files are checked afterwards."""
    from exaone_gguf.publish.push import again

    with _errors(interrupted=f"{again(release_dir, repo_id)}."):
        _push_and_report(release_dir, repo_id, as_json, private=private, dry_run=dry_run, force=force)


@app.command()
def quantize(
    input_gguf: Path = typer.Argument(..., metavar="IN.gguf", help="F32/F16/BF16 GGUF file."),
    output: Path = typer.Argument(..., metavar="OUT.gguf", help="Output file."),
    qtype: str = typer.Argument(
        ...,
        metavar="TYPE",
        help="q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_m, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, iq4_xs, f16, bf16, f32",
    ),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="llama.cpp importance matrix (GGUF or .dat)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    allow_requantize: bool = typer.Option(False, "--allow-requantize", help="Accept an already quantized input."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Quantize weights containing NaN or infinity anyway (with a warning)."
    ),
    tensor_type: list[str] = _tensor_type_opt(),
    output_tensor_type: Optional[str] = _output_tensor_type_opt(),
    token_embedding_type: Optional[str] = _token_embedding_type_opt(),
    pure: bool = _pure_opt(),
    leave_output_tensor: bool = _leave_output_opt(),
    target_bpw: Optional[float] = _target_bpw_opt(),
    target_size: Optional[str] = _target_size_opt(),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="--target-bpw/--target-size: the source checkpoint, to measure each tensor's KLD."
    ),
    no_mtp: bool = typer.Option(False, "--no-mtp", help="Leave out the MTP blocks, as convert --no-mtp."),
) -> None:
    """Quantize a GGUF file with llama.cpp's per-tensor type mixture and its exact kernels."""
    from exaone_gguf.convert.from_gguf import quantize_gguf
    from exaone_gguf.quantize.target import parse_target

    with _errors():
        threads = resolve_threads(threads)
        overrides = _overrides(tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor)
        target = parse_target(target_bpw, target_size)
        probe = None
        if target is not None:
            if reference is None:
                raise InputError(
                    f"{target.describe()} measures each tensor's effect on the logits; pass --reference SRC_DIR "
                    f"(the checkpoint {input_gguf} was converted from)."
                )
            from exaone_gguf.families import load_checkpoint

            probe = _sensitivity(load_checkpoint(resolve_source(reference)), None)
        result = _run_with_progress(
            f"quantizing {input_gguf.name}",
            lambda **kw: quantize_gguf(
                input_gguf,
                output,
                qtype,
                threads=threads,
                imatrix=imatrix,
                allow_requantize=allow_requantize,
                force=force,
                allow_nonfinite=allow_nonfinite,
                overrides=overrides,
                target=target,
                probe=probe,
                no_mtp=no_mtp,
                **kw,
            ),
        )
        _warn_nonfinite(result.nonfinite, "quantized")
        _report_written(result, as_json)


def _parse_thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--threshold {item!r}: write NAME=NUMBER, e.g. max_mean_kld=0.01.")
    return out


@app.command()
def validate(
    model: Path = typer.Argument(..., metavar="MODEL.gguf", help="GGUF file to validate."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="Source checkpoint directory (or Hub repo id) to compare with."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (all layers offloaded)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this file."),
    text: Optional[Path] = typer.Option(
        None, "--text", help="Evaluation text file (default: built-in bilingual text)."
    ),
    max_tokens: int = typer.Option(256, "--max-tokens", min=2, help="Tokens of the evaluation text to compare."),
    threshold: list[str] = typer.Option(
        [], "--threshold", help="Override a fidelity threshold, e.g. max_mean_kld=0.01 (turns on --quality-gate)."
    ),
    quality_gate: bool = typer.Option(
        False, "--quality-gate", help="Fail (exit 1) when fidelity is below the type's thresholds; default: a warning."
    ),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="The imatrix the file was quantized with."),
    full_tensors: bool = typer.Option(False, "--full-tensors", hidden=True, help="Deprecated: every row is checked."),
    against: Optional[Path] = typer.Option(
        None,
        "--against",
        metavar="BASE.gguf",
        help="Compare with a higher-precision GGUF as llama-perplexity --kl-divergence does.",
    ),
    ctx: int = typer.Option(512, "--ctx", min=4, help="--against: tokens per chunk (llama-perplexity's -c)."),
    chunks: Optional[int] = typer.Option(None, "--chunks", min=1, help="--against: at most this many chunks."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    mmproj: Optional[Path] = typer.Option(
        None,
        "--mmproj",
        metavar="MMPROJ.gguf",
        help="The vision projector of this text model (EXAONE 4.5): checked too, and a short generation with both.",
    ),
) -> None:
    """Check a GGUF: metadata, tokenizer, chat template; with --reference its tensors, its structure (logits of its
    own weights) and its fidelity (logits against the source). A projector file (clip) gets the vision checks and
    libmtmd's image embedding against the reference. Exit 1: the file is wrong."""
    from exaone_gguf.validate import validate as run_validate
    from exaone_gguf.validate.mmproj import is_mmproj, validate_mmproj

    if full_tensors:
        err.print("--full-tensors is deprecated and does nothing: every row of every tensor is checked by default.")

    with _errors():
        source = resolve_source(reference) if reference is not None else None
        if against is None and mmproj is None and is_mmproj(model):
            report = validate_mmproj(model, source, threads=resolve_threads(threads))
        elif against is not None:
            if reference is not None:
                raise InputError("--against and --reference: give one of them (a base GGUF or the source checkpoint).")
            from exaone_gguf.validate.against import validate_against

            report = validate_against(
                model,
                against,
                text,
                ctx,
                chunks,
                threshold_overrides=_parse_thresholds(threshold),
                quality_gate=quality_gate,
                threads=resolve_threads(threads),
            )
        else:
            report = run_validate(
                model,
                resolve_source(reference) if reference is not None else None,
                device=device,
                text=text,
                max_tokens=max_tokens,
                threshold_overrides=_parse_thresholds(threshold),
                threads=threads,
                quality_gate=quality_gate,
                imatrix=imatrix,
            )
        if mmproj is not None:  # the projector, run by libmtmd with this text model, and both files together
            vision = validate_mmproj(mmproj, source, text_model=model, threads=resolve_threads(threads), generate=True)
            report.checks += vision.checks
            report.seconds += vision.seconds
        report.render(err)
        if json_path:
            report.write_json(json_path)
        if not report.passed:
            failed = [c.name for c in report.checks if c.status == "fail"]
            raise ValidationFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}")


@app.command()
def imatrix(
    src_dir: Path = typer.Argument(..., help="Hugging Face checkpoint directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Output imatrix .gguf file (llama-imatrix's format)."),
    text: Optional[Path] = typer.Option(None, "--text", help="Calibration text (UTF-8); default: the built-in text."),
    ctx: int = typer.Option(512, "--ctx", min=1, help="Tokens per chunk (llama-imatrix's -c)."),
    chunks: Optional[int] = typer.Option(None, "--chunks", min=1, help="At most this many chunks (default: all)."),
    parse_special: bool = typer.Option(
        False,
        "--parse-special",
        help="Read special tokens written in --text (e.g. [|user|]) as those tokens, as llama-imatrix's "
        "--parse-special does; by default they are plain text, as llama-imatrix reads them. The built-in text's "
        "chat turns are always read as tokens.",
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Compute an importance matrix from the source checkpoint (float32 reference forward) for --imatrix."""
    from rich.progress import MofNCompleteColumn, TimeElapsedColumn

    from exaone_gguf.validate.imatrix import collect_imatrix

    with _errors():
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task(f"imatrix {src_dir.name}", total=None)
            result = collect_imatrix(
                src_dir,
                output,
                text=text,
                ctx=ctx,
                chunks=chunks,
                parse_special=parse_special,
                threads=resolve_threads(threads),
                force=force,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if as_json:
            _print_json(result.to_dict())
        err.print(
            f"wrote [bold]{result.output}[/] ({result.n_entries} tensors, {result.chunks} chunks of {result.ctx} tokens)",
            highlight=False,
        )


@app.command("make-tiny")
def make_tiny_cmd(
    args: list[str] = typer.Argument(
        ..., metavar="[FAMILY] OUT_DIR", help=f"FAMILY: {' | '.join(tiny_recipes())} (optional with --from-config)."
    ),
    seed: int = typer.Option(0, "--seed"),
    tokenizer_dir: Optional[Path] = typer.Option(None, "--tokenizer-dir", help="Use real tokenizer files from DIR."),
    from_config: Optional[Path] = typer.Option(None, "--from-config", help="Keep every key of this config.json."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1),
    hidden: Optional[int] = typer.Option(None, "--hidden", min=1),
    heads: Optional[int] = typer.Option(None, "--heads", min=1),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", min=1),
    head_dim: Optional[int] = typer.Option(None, "--head-dim", min=2),
    intermediate: Optional[int] = typer.Option(None, "--intermediate", min=1),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT_DIR."),
) -> None:
    """Write a tiny random checkpoint (real names and keys, tiny sizes) for tests and the demo."""
    from exaone_gguf.tiny import make_tiny

    with _errors():
        if len(args) == 2:
            family, out_dir = args[0], Path(args[1])
        elif len(args) == 1 and from_config is not None:
            family, out_dir = None, Path(args[0])
        else:
            raise InputError("make-tiny: give FAMILY OUT_DIR, or OUT_DIR with --from-config CONFIG.")
        out = make_tiny(
            family,
            out_dir,
            seed=seed,
            tokenizer_dir=tokenizer_dir,
            from_config=from_config,
            force=force,
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate=intermediate,
        )
        err.print(f"wrote tiny checkpoint to [bold]{out}[/]", highlight=False)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="GGUF file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show a GGUF file's header, metadata, tensors and bits per weight."""
    from exaone_gguf.gguf_io.inspect import inspect_gguf, render_inspect

    with _errors():
        summary = inspect_gguf(model)
        if as_json:
            _print_json(summary)
        else:
            render_inspect(summary, err)


@app.command()
def demo(
    workdir: Optional[Path] = typer.Argument(None, help="Keep the files here (default: a temporary directory)."),
    families: str = typer.Option(",".join(demo_recipes()), "--families", help="Comma-separated make-tiny families."),
    types: str = typer.Option("bf16,q8_0,q4_k_m", "--types", help="Comma-separated output types."),
) -> None:
    """Make tiny checkpoints, convert, quantize, validate and chat with them; a table at the end."""
    from exaone_gguf.demo import run_demo

    with _errors():
        rows = run_demo(workdir, err, families=families.split(","), types=types.split(","))
        if not all(r.passed for r in rows):
            raise ValidationFailed("a demo model failed validation; run `exaone-gguf validate` on it for details")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
