"""What the command line prints (cli.py declares the options): errors and exit codes, progress bars, results."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from exaone_gguf.errors import InputError, ValidationFailed

err = Console(stderr=True)


def _on_sigterm(signum, frame):  # turn SIGTERM into an exception so partial outputs are cleaned up
    raise SystemExit(128 + signum)


@contextmanager
def errors(interrupted: str = "nothing was left at the output path.") -> Iterator[None]:
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
    except KeyboardInterrupt as e:  # commands.Interrupted says what the user has and how to go on
        err.print(
            f"[bold red]interrupted[/]; {escape(getattr(e, 'after', interrupted))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(130)


def _progress(*columns) -> Progress:
    columns = columns or (DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    return Progress(TextColumn("{task.description}"), BarColumn(), *columns, console=err, disable=not err.is_terminal)


def print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


class RichUi:
    """commands.Ui on stderr (rich), JSON on stdout."""

    console = err

    @contextmanager
    def writing(self, label: str):
        """A byte-counting bar for a writer: (on_plan, on_chunk)."""
        with _progress() as progress:
            task = progress.add_task(label, total=None)
            yield (
                lambda plan: progress.update(task, total=plan.data_bytes),
                lambda tensor, n: progress.update(task, advance=n, description=f"{tensor.name:<28}"),
            )

    @contextmanager
    def counting(self, label: str):
        with _progress(MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    @contextmanager
    def uploading(self):
        """A byte-counting bar per push step: (on_stage, progress)."""
        with _progress() as bar:
            tasks = []
            yield (
                lambda label, total: tasks.append(bar.add_task(label, total=total)),
                lambda name, n: bar.update(tasks[-1], advance=n, description=f"{name:<36}"),
            )

    def warning(self, text: str) -> None:
        err.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        err.print(f"note: {escape(text)}", highlight=False, soft_wrap=True)

    def report(self, report) -> None:
        report.render(err)

    def shards(self, files: list[Path]) -> None:
        err.print(f"{len(files)} shard(s): {', '.join(p.name for p in files)}", highlight=False)

    def show(self, result, as_json: bool = False) -> None:
        from exaone_gguf.model.imatrix import ImatrixResult
        from exaone_gguf.publish import PublishResult
        from exaone_gguf.publish.push import PushResult

        if isinstance(result, Path):  # make-tiny
            err.print(f"wrote tiny checkpoint to [bold]{result}[/]", highlight=False)
        elif isinstance(result, dict):  # inspect, or convert --push --json
            if as_json:
                print_json(result)
            else:
                from exaone_gguf.gguf_io.inspect import render_inspect

                render_inspect(result, err)
        elif isinstance(result, PublishResult):
            _published(result, as_json)
        elif isinstance(result, PushResult):
            _pushed(result, as_json)
        elif isinstance(result, ImatrixResult):
            if as_json:
                print_json(result.to_dict())
            err.print(
                f"wrote [bold]{result.output}[/] ({result.n_entries} tensors, {result.chunks} chunks of "
                f"{result.ctx} tokens)",
                highlight=False,
            )
        else:  # a converted, quantized or projector file
            if as_json:
                print_json(result.to_dict())
            err.print(
                f"wrote [bold]{result.output}[/] ({result.arch}, {result.outtype}, {result.n_tensors} tensors, "
                f"{result.file_size / 1e6:.1f} MB)",
                highlight=False,
            )


ui = RichUi()


def _published(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
    for v in result.variants:
        extra = f", mean KLD {v.mean_kld:.5f}, same top-1 {v.same_top1:.1f}%" if v.mean_kld is not None else ""
        err.print(
            f"wrote [bold]{v.files[0]}[/] ({v.outtype}, {v.size / 1e6:.1f} MB, {len(v.files)} file(s){extra})",
            highlight=False,
        )
    err.print(f"card {result.card}, manifest {result.manifest} ({result.seconds:.1f} s)", highlight=False)


def _pushed(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
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
