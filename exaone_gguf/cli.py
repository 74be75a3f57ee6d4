"""The `exaone-gguf` command line: argument parsing and printing only; the work lives in the packages."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from exaone_gguf.errors import InputError, ValidationFailed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Convert, quantize and validate EXAONE checkpoints as GGUF files for llama.cpp.",
)
err = Console(stderr=True)

OUTTYPES = "auto|f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k_m|q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k|iq4_xs"


def _on_sigterm(signum, frame):  # turn SIGTERM into an exception so partial outputs are cleaned up
    raise SystemExit(128 + signum)


@contextmanager
def _errors() -> Iterator[None]:
    """Map the project's errors to DESIGN.md's exit codes, with one sentence and no traceback."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except InputError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except ValidationFailed as e:
        err.print(f"[bold red]validation failed:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]; nothing was left at the output path.")
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


@app.command()
def convert(
    src_dir: Path = typer.Argument(..., help="Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .gguf file."),
    outtype: str = typer.Option("auto", "--outtype", help=f"Tensor type: {OUTTYPES}. auto keeps the source precision."),
    threads: int = typer.Option(1, "--threads", min=1, help="Worker threads for quantization kernels."),
    split_max_size: Optional[str] = typer.Option(None, "--split-max-size", help="Split output into shards (not yet supported)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Convert a checkpoint directory into a GGUF file."""
    from exaone_gguf.convert.pipeline import convert as run_convert

    with _errors():
        if split_max_size:
            raise InputError("--split-max-size: split output is not supported yet; convert without it.")
        with _progress() as progress:
            task = progress.add_task(f"converting {src_dir.name}", total=None)

            def on_plan(plan):
                progress.update(task, total=plan.data_bytes)

            def on_chunk(tensor, n):
                progress.update(task, advance=n, description=f"{tensor.name:<28}")

            result = run_convert(src_dir, output, outtype, threads=threads, force=force, progress=on_chunk, on_plan=on_plan)
        if as_json:
            _print_json(result.to_dict())
        err.print(
            f"wrote [bold]{result.output}[/] ({result.arch}, {result.outtype}, {result.n_tensors} tensors, "
            f"{result.file_size / 1e6:.1f} MB)",
            highlight=False,
        )


@app.command("make-tiny")
def make_tiny_cmd(
    args: list[str] = typer.Argument(
        ..., metavar="[FAMILY] OUT_DIR", help="FAMILY: exaone3 | exaone3.5 | exaone4 | exaone4-hybrid (optional with --from-config)."
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
