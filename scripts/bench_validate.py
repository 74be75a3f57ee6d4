#!/usr/bin/env python
"""Benchmark `exaone-gguf validate` on the 1.2B shape beside llama.cpp's own route to the same figures.

Setup (not timed): a full-size random BF16 checkpoint of the real EXAONE-4.0-1.2B config with `make-tiny
--from-config` (dtype set to bfloat16, the real tokenizer from ../shared/fixtures), converted to BF16 and
Q4_K_M with `exaone-gguf convert --outtype bf16,q4_k_m` (one read). One text file (the validator's built-in
text) for everyone.

Contenders, each its own process (wall time, peak RSS from wait4, CPU seconds):

  ours validate BF16       `validate BF16.gguf --reference SRC --max-tokens N` (metadata, tokenizer, template,
                           tensors, llama.cpp's logits on the file against the source's own numpy forward)
  ours validate Q4_K_M     the same for the Q4_K_M file, with our BF16 conversion of the source in a temporary
                           file: llama.cpp on it against the source's own forward, the file's graph keys against
                           it, and the file's fidelity against it (no forward on the file's own weights: that is
                           --structure)
  ours --against           `validate Q4_K_M.gguf --against BF16.gguf --ctx N --chunks 1`: llama-perplexity's
                           figures computed in one process
  llama.cpp base           `llama-perplexity -m BF16.gguf -c N --chunks 1 --kl-divergence-base FILE`
  llama.cpp kld            `llama-perplexity -m Q4_K_M.gguf -c N --kl-divergence-base FILE --kl-divergence`
  llama-quantize Q4_K_M    `llama-quantize BF16.gguf OUT Q4_K_M THREADS`: what the tensor check costs at best (it
                           quantizes every row of the source again)

Same tokens: every contender runs the model over the first N tokens of the text (llama-perplexity puts BOS in
place of the first); our validate compares all N positions, llama-perplexity (and --against, which does what it
does) scores the last N/2 - 1. llama-perplexity wants 2N tokens of text, so the built-in text is written twice.
llama.cpp's tools come from scripts/llama_tools.py (built once).

  /work/venv/bin/python scripts/bench_validate.py [--max-tokens 256] [--threads 2] [--work-dir DIR] [--keep]
                                                 [--reuse DIR]   (DIR kept by --keep: no make-tiny, no convert)
                                                 [--checkpoint SRC]   (a real checkpoint instead of the 1.2B shape,
                                                 e.g. the SmolLM2 one of scripts/smollm2_checkpoint.py)

Targets (issue 21): each validate run at most 3x llama.cpp's two runs; peak RSS under 3 GB. The report gives the
tensor check's own seconds, so the ratio is printed for the whole run and for the rest.

Measured (session 9, 1.2B shape, 2 threads, an idle 2-core machine, load average 1.2-1.9):
  ours validate BF16 23.2 s wall / 39.0 s CPU / 2860 MB; Q4_K_M 104.5 s / 173.9 s / 2898 MB, of which the tensor
  check 63.4 s; --against 14.2 s / 24.8 s / 2886 MB; llama-perplexity base 7.3 s / 13.6 s / 2763 MB, kld 7.2 s /
  12.4 s / 1571 MB; llama-quantize 52.2 s / 100.8 s / 1392 MB. Ratios to llama.cpp's two runs (14.5 s): BF16
  1.60x (met), Q4_K_M 7.21x (missed: its tensor check alone is 1.22x llama-quantize, which is 3.6x llama.cpp's
  two runs; the rest 2.84x), --against 0.98x. Peak RSS met (was 3209 MB: the runner now decodes 64 tokens at a
  time, and the file's logits wait on disk while llama.cpp maps the BF16 conversion).
  SmolLM2-135M as EXAONE 3.x (--checkpoint, load average 3): BF16 6.0 s = 2.31x, Q4_K_M 10.2 s = 3.94x (tensor
  check 1.8 s = 1.20x llama-quantize, the rest 3.26x), --against 1.36x; peak RSS 536 MB.
No assertions: it prints a table and the ratios. Every multi-GB file is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
CONFIG = FIXTURES / "exaone-4.0-1.2B" / "config.json"
TOKENIZER = FIXTURES / "exaone-4.0-1.2B"
CLI = [sys.executable, "-m", "exaone_gguf"]
TARGET_RATIO, TARGET_RSS_MB = 3.0, 3000
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


@dataclass
class Run:
    name: str
    seconds: float
    rss_mb: float
    cpu_s: float
    rc: int
    out: str


def measured(name: str, cmd: list[str], env: dict | None = None) -> Run:
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    rc = os.waitstatus_to_exitcode(status)
    r = Run(name, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, rc, text)
    print(f"  {name:<22} {wall:8.1f} s  peak RSS {r.rss_mb:8.0f} MB  CPU {r.cpu_s:7.1f} s  exit {rc}", flush=True)
    return r


def setup(work: Path, threads: int, config: Path) -> tuple[Path, Path, Path]:
    cfg = json.loads(config.read_text())
    cfg["dtype"] = cfg["torch_dtype"] = "bfloat16"
    (work / "config.json").write_text(json.dumps(cfg, indent=2))
    src = work / "src"
    t0 = time.perf_counter()
    subprocess.run(
        [
            *CLI,
            "make-tiny",
            str(src),
            "--from-config",
            str(work / "config.json"),
            "--tokenizer-dir",
            str(TOKENIZER),
            "--force",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"make-tiny --from-config: {time.perf_counter() - t0:.0f} s", flush=True)
    return (src, *convert_pair(src, work, threads))


def convert_pair(src: Path, work: Path, threads: int) -> tuple[Path, Path]:
    """The BF16 and Q4_K_M files of `src` in one convert run (not timed)."""
    out = work / "out"
    t0 = time.perf_counter()
    subprocess.run(
        [*CLI, "convert", str(src), "-o", str(out) + "/", "--outtype", "bf16,q4_k_m", "--threads", str(threads)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"convert bf16,q4_k_m: {time.perf_counter() - t0:.0f} s", flush=True)
    return next(out.glob("*-BF16.gguf")), next(out.glob("*-Q4_K_M.gguf"))


def tensor_seconds(report: Path) -> float:
    """The tensor check's own seconds, from validate's JSON report (nan without it)."""
    if not report.exists():
        return float("nan")
    check = next((c for c in json.loads(report.read_text())["checks"] if c["name"] == "tensors: match source"), None)
    return float(check["data"].get("seconds", "nan")) if check and check.get("data") else float("nan")


def figures(text: str, patterns: dict[str, str]) -> dict[str, float]:
    out = {}
    for k, pat in patterns.items():
        m = re.search(pat, text)
        out[k] = float(m.group(1)) if m else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-tokens", type=int, default=256, help="tokens our validate compares (N)")
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--reuse", type=Path, default=None, help="a work folder kept by --keep: skip make-tiny and convert (not timed)"
    )
    ap.add_argument("--config", type=Path, default=CONFIG, help="model config.json (default: the real 1.2B one)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint to convert instead of make-tiny's")
    args = ap.parse_args()
    if not args.config.is_file() or not TOKENIZER.is_dir():
        sys.exit(f"{args.config} or {TOKENIZER}: not found (../shared/fixtures must sit beside the checkout).")
    import llama_tools

    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = args.reuse or Path(tempfile.mkdtemp(prefix="bench-validate-", dir=args.work_dir))
    n = ctx = args.max_tokens
    try:
        if args.reuse:
            src, bf16, q4 = (
                args.checkpoint or work / "src",
                next(work.glob("out/*-BF16.gguf")),
                next(work.glob("out/*-Q4_K_M.gguf")),
            )
        elif args.checkpoint:
            src, (bf16, q4) = args.checkpoint, convert_pair(args.checkpoint, work, args.threads)
        else:
            src, bf16, q4 = setup(work, args.threads, args.config)
        from exaone_gguf.model.texts import load_text

        text = work / "text.txt"
        text.write_text("\n\n".join([load_text(None)] * 2), encoding="utf-8")  # >= 2N tokens for llama-perplexity
        tools = llama_tools.tools()  # after the setup: a first build of the tools can run beside it
        kld = work / "base.kld"
        lp = [str(tools["llama-perplexity"]), "-f", str(text), "-c", str(ctx), "-t", str(args.threads)]
        print(
            f"\n{(args.checkpoint or args.config.parent).name}, {n} tokens (llama-perplexity and --against: -c {ctx}, one chunk), {args.threads} threads, "
            f"load average {os.getloadavg()[0]:.1f}:",
            flush=True,
        )
        runs = [
            measured(
                "ours validate BF16",
                [
                    *CLI,
                    "validate",
                    str(bf16),
                    "--reference",
                    str(src),
                    "--max-tokens",
                    str(n),
                    "--text",
                    str(text),
                    "--json",
                    str(work / "bf16.json"),
                ],
            ),
            measured(
                "ours validate Q4_K_M",
                [
                    *CLI,
                    "validate",
                    str(q4),
                    "--reference",
                    str(src),
                    "--max-tokens",
                    str(n),
                    "--text",
                    str(text),
                    "--json",
                    str(work / "q4.json"),
                ],
            ),
            measured(
                "ours --against",
                [
                    *CLI,
                    "validate",
                    str(q4),
                    "--against",
                    str(bf16),
                    "--text",
                    str(text),
                    "--ctx",
                    str(ctx),
                    "--chunks",
                    "1",
                    "--json",
                    str(work / "against.json"),
                ],
            ),
            measured("llama.cpp base", [*lp, "-m", str(bf16), "--chunks", "1", "--kl-divergence-base", str(kld)]),
            measured("llama.cpp kld", [*lp, "-m", str(q4), "--kl-divergence-base", str(kld), "--kl-divergence"]),
            measured(
                "llama-quantize Q4_K_M",
                [str(tools["llama-quantize"]), str(bf16), str(work / "lq.gguf"), "Q4_K_M", str(args.threads)],
            ),
        ]
        (work / "lq.gguf").unlink(missing_ok=True)
        by = {r.name: r for r in runs}
        llama = by["llama.cpp base"].seconds + by["llama.cpp kld"].seconds
        print(f"\n{'contender':<24}{'wall s':>9}{'peak RSS MB':>13}{'CPU s':>9}")
        for r in runs:
            print(f"{r.name:<24}{r.seconds:>9.1f}{r.rss_mb:>13.0f}{r.cpu_s:>9.1f}")
        peak = max(by["ours validate BF16"].rss_mb, by["ours validate Q4_K_M"].rss_mb)
        print(f"\nllama.cpp's two runs (base + kld): {llama:.1f} s")
        for name, report in (("BF16", "bf16.json"), ("Q4_K_M", "q4.json")):
            ours = by[f"ours validate {name}"].seconds
            tensors = tensor_seconds(work / report)
            print(
                f"ours validate {name}: {ours:.1f} s = {ours / llama:.2f}x (target <= {TARGET_RATIO:g}x: "
                f"{'met' if ours <= TARGET_RATIO * llama else 'MISSED'}); its tensor check {tensors:.1f} s = "
                f"{tensors / by['llama-quantize Q4_K_M'].seconds:.2f}x llama-quantize; the rest {ours - tensors:.1f} s "
                f"= {(ours - tensors) / llama:.2f}x llama.cpp's two runs"
            )
        print(f"ours --against / llama.cpp (two runs): {by['ours --against'].seconds / llama:.2f}x")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")
        print(
            f"our peak RSS {peak:.0f} MB (target < {TARGET_RSS_MB} MB: {'met' if peak < TARGET_RSS_MB else 'MISSED'}); "
            f"--against {by['ours --against'].rss_mb:.0f} MB"
        )
        theirs = figures(
            by["llama.cpp kld"].out,
            {
                "mean_kld": r"Mean\s+KLD:\s*(\S+)",
                "p99_kld": r"99\.0%\s+KLD:\s*(\S+)",
                "max_kld": r"Maximum KLD:\s*(\S+)",
                "same_top1": r"Same top p:\s*(\S+)",
            },
        )
        rows = []
        for name in ("q4.json", "against.json"):
            path = work / name
            m = json.loads(path.read_text()).get("metrics") if path.exists() else None
            rows.append((name, m))
        print(f"\n{'figures':<28}{'mean KLD':>10}{'p99 KLD':>10}{'max KLD':>10}{'same top':>10}")
        print(
            f"{'llama-perplexity':<28}{theirs['mean_kld']:>10.4g}{theirs['p99_kld']:>10.4g}{theirs['max_kld']:>10.4g}"
            f"{theirs['same_top1']:>9.2f}%"
        )
        for name, m in rows:
            if m:
                print(
                    f"{'ours ' + name[:-5]:<28}{m['mean_kld']:>10.4g}{m['p99_kld']:>10.4g}{m['max_kld']:>10.4g}"
                    f"{m['same_top1']:>9.2f}%"
                )
        print(
            "(ours q4: Q4_K_M against llama.cpp on the source's float conversion on N tokens; ours against / llama-perplexity: "
            "Q4_K_M against BF16 on the scored half of the window)"
        )
        for r in runs:
            if r.rc not in (0, 1):
                print(f"\n{r.name} exited {r.rc}:\n{r.out[-1500:]}")
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
