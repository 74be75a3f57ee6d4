"""`exaone-gguf demo`: make tiny checkpoints, convert, quantize, validate, chat — a table at the end."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from exaone_gguf.families import demo_recipes

DEFAULT_FAMILIES = demo_recipes()
DEFAULT_TYPES = ("bf16", "q8_0", "q4_k_m")
PROMPT = "안녕하세요! 한국의 수도는 어디인가요?"


@dataclass
class DemoRow:
    family: str
    outtype: str
    size_mb: float
    convert_s: float
    validate_s: float
    passed: bool
    n_pass: int
    n_checks: int
    mean_kld: float
    same_top1: float
    reply: str


def chat_reply(gguf: Path, prompt: str = PROMPT, max_tokens: int = 8) -> str:
    """A few tokens of a chat reply through llama-cpp-python and the file's own chat template."""
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=256, verbose=False, seed=0)
    try:
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0
        )
    finally:
        llm.close()
    return out["choices"][0]["message"].get("content") or ""


def run_demo(workdir: Path | None, console: Console, families=DEFAULT_FAMILIES, types=DEFAULT_TYPES) -> list[DemoRow]:
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.tiny import make_tiny
    from exaone_gguf.validate import validate

    keep = workdir is not None
    root = Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="exaone-gguf-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for family in families:
            console.print(f"[bold]{family}[/]: making a tiny random checkpoint")
            src = make_tiny(family, root / f"tiny-{family}", force=True)
            for outtype in types:
                out = root / f"tiny-{family}-{outtype.upper()}.gguf"
                t0 = time.perf_counter()
                result = convert(src, out, ConvertOptions(outtype=outtype, force=True))
                t1 = time.perf_counter()
                console.print(f"  converted to {outtype} in {t1 - t0:.1f} s; validating")
                report = validate(out, src)
                t2 = time.perf_counter()
                m = report.metrics or {}
                rows.append(
                    DemoRow(
                        family,
                        outtype,
                        result.file_size / 1e6,
                        t1 - t0,
                        t2 - t1,
                        report.passed,
                        sum(c.status == "pass" for c in report.checks),
                        len(report.checks),
                        m.get("mean_kld", float("nan")),
                        m.get("same_top1", float("nan")),
                        chat_reply(out),
                    )
                )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    console.print(render_table(rows, root if keep else None))
    return rows


def _printable(text: str) -> str:
    """A random model's reply on one line: whitespace collapsed, control characters shown as dots."""
    return "".join(c if c.isprintable() else "·" for c in " ".join(text.split()))


def render_table(rows: list[DemoRow], kept: Path | None) -> Table:
    caption = f"files kept in {kept}" if kept else "tiny random models: the reply is noise, the checks are real"
    table = Table(title="exaone-gguf demo", caption=caption)
    table.add_column("model")
    for col in ("MB", "conv+val s", "checks", "mean KLD", "top-1"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("reply")
    for r in rows:
        table.add_row(
            f"{r.family} {r.outtype.upper()}",
            f"{r.size_mb:.0f}",
            f"{r.convert_s:.1f}+{r.validate_s:.1f}",
            f"{r.n_pass}/{r.n_checks}",
            f"{r.mean_kld:.1e}",
            f"{r.same_top1:.0f}%",
            Text("PASS", style="bold green") if r.passed else Text("FAIL", style="bold red"),
            Text(_printable(r.reply)[:10]),
        )
    return table
