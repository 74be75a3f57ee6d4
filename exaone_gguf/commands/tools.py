"""The smaller commands: `imatrix`, `make-tiny`, `inspect` and `demo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exaone_gguf.commands import Ui
from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError, ValidationFailed


@dataclass(frozen=True)
class ImatrixJob:
    source: Path
    output: Path
    threads: int
    text: Path | None = None
    ctx: int = 512
    chunks: int | None = None
    parse_special: bool = False
    force: bool = False
    as_json: bool = False

    @classmethod
    def parse(cls, src_dir, output, text, ctx, chunks, parse_special, threads, force, as_json) -> ImatrixJob:
        return cls(src_dir, output, resolve_threads(threads), text, ctx, chunks, parse_special, force, as_json)


def imatrix(job: ImatrixJob, ui: Ui):
    from exaone_gguf.model.imatrix import collect_imatrix

    with ui.counting(f"imatrix {job.source.name}") as progress:
        result = collect_imatrix(
            job.source,
            job.output,
            text=job.text,
            ctx=job.ctx,
            chunks=job.chunks,
            parse_special=job.parse_special,
            threads=job.threads,
            force=job.force,
            progress=progress,
        )
    ui.show(result, job.as_json)
    return result


@dataclass(frozen=True)
class MakeTinyJob:
    family: str | None  # None: every key from --from-config
    out_dir: Path
    seed: int = 0
    tokenizer_dir: Path | None = None
    from_config: Path | None = None
    force: bool = False
    layers: int | None = None  # the sizes given; None: the recipe's (or the config's)
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    intermediate: int | None = None

    @classmethod
    def parse(
        cls, args, seed, tokenizer_dir, from_config, layers, hidden, heads, kv_heads, head_dim, intermediate, force
    ) -> MakeTinyJob:
        if len(args) == 2:
            family, out_dir = args[0], Path(args[1])
        elif len(args) == 1 and from_config is not None:
            family, out_dir = None, Path(args[0])
        else:
            raise InputError("make-tiny: give FAMILY OUT_DIR, or OUT_DIR with --from-config CONFIG.")
        return cls(
            family, out_dir, seed, tokenizer_dir, from_config, force, layers, hidden, heads, kv_heads, head_dim,
            intermediate,
        )  # fmt: skip


def make_tiny(job: MakeTinyJob, ui: Ui) -> Path:
    from exaone_gguf.tiny import make_tiny as write_tiny

    out = write_tiny(
        job.family,
        job.out_dir,
        seed=job.seed,
        tokenizer_dir=job.tokenizer_dir,
        from_config=job.from_config,
        force=job.force,
        layers=job.layers,
        hidden=job.hidden,
        heads=job.heads,
        kv_heads=job.kv_heads,
        head_dim=job.head_dim,
        intermediate=job.intermediate,
    )
    ui.show(out)
    return out


@dataclass(frozen=True)
class InspectJob:
    model: Path
    as_json: bool = False


def inspect(job: InspectJob, ui: Ui) -> dict:
    from exaone_gguf.gguf_io.inspect import inspect_gguf

    summary = inspect_gguf(job.model)
    ui.show(summary, job.as_json)  # the JSON object, or the tables
    return summary


@dataclass(frozen=True)
class DemoJob:
    workdir: Path | None
    families: tuple[str, ...]
    types: tuple[str, ...]

    @classmethod
    def parse(cls, workdir, families, types) -> DemoJob:
        return cls(workdir, tuple(families.split(",")), tuple(types.split(",")))


def demo(job: DemoJob, ui: Ui) -> list:
    from exaone_gguf.demo import run_demo

    rows = run_demo(job.workdir, ui.console, families=list(job.families), types=list(job.types))
    if not all(r.passed for r in rows):
        raise ValidationFailed("a demo model failed validation; run `exaone-gguf validate` on it for details")
    return rows
