#!/usr/bin/env python3
"""Benchmark (issue 15 item 4): `exaone-gguf imatrix` against llama-imatrix on the EXAONE-4.0-1.2B shape, same
text, context, chunks and threads, in the same run.

    flock /tmp/heavy.lock python scripts/bench_imatrix.py [--work-dir DIR] [--threads 2] [--chunks 4] [--ctx 512]

Makes a full-size EXAONE-4.0-1.2B-shaped checkpoint with random BF16 weights (make-tiny --from-config on
../shared/fixtures/exaone-4.0-1.2B/config.json with its tokenizer), converts it to a BF16 GGUF (llama-imatrix's
input; --llama-type f32 for an F32 one), writes the built-in calibration text to a file, then times, each as
its own subprocess (wall time and peak RSS from wait4):

  ours    exaone-gguf imatrix SRC --text FILE --ctx C --chunks N --threads T   (numpy float32 reference forward)
  llama   llama-imatrix -m GGUF -f FILE -c C --chunks N -t T --no-ppl          (ggml)

and prints the ratio ours / llama and the load average beside the figures. Nothing here is asserted; tests
never time anything. `--profile` runs ours once more under cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "exaone-4.0-1.2B"
CLI = [sys.executable, "-m", "exaone_gguf"]
sys.path.insert(0, str(ROOT / "scripts"))


def measured(name: str, cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            out.seek(0)
            sys.exit(f"{name} failed:\n{out.read()[-3000:]}")
    rss = usage.ru_maxrss / 1024
    print(f"  {name:<6} {wall:8.1f} s  peak RSS {rss:8.0f} MB  load {os.getloadavg()[0]:.2f}", flush=True)
    return wall, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--llama-type", choices=("bf16", "f32"), default="bf16")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    import llama_tools

    from exaone_gguf.checkpoint import load_checkpoint
    from exaone_gguf.validate.calibration import calibration_text
    from exaone_gguf.validate.imatrix import _token_text

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-imatrix-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg = json.loads((FIXTURE / "config.json").read_text())
        cfg["dtype"] = cfg["torch_dtype"] = "bfloat16"
        (work / "config.json").write_text(json.dumps(cfg, indent=2))
        src = work / "src"
        if not (src / "config.json").exists():
            subprocess.run(
                [
                    *CLI,
                    "make-tiny",
                    str(src),
                    "--from-config",
                    str(work / "config.json"),
                    "--tokenizer-dir",
                    str(FIXTURE),
                    "--force",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        gguf = work / f"model-{args.llama_type}.gguf"
        if not gguf.exists():
            subprocess.run(
                [
                    *CLI,
                    "convert",
                    str(src),
                    "-o",
                    str(gguf),
                    "--outtype",
                    args.llama_type,
                    "--threads",
                    str(args.threads),
                ],
                check=True,
                stderr=subprocess.DEVNULL,
            )
        tok = load_checkpoint(src).tokenizer
        text = work / "calibration.txt"
        text.write_text(
            calibration_text(tok.chat_template, _token_text(tok, tok.bos_token_id), _token_text(tok, tok.eos_token_id)),
            encoding="utf-8",
        )
        tool = llama_tools.tools()["llama-imatrix"]
        common = ["--ctx", str(args.ctx), "--chunks", str(args.chunks), "--threads", str(args.threads)]
        print(
            f"1.2B shape, {args.chunks} chunks of {args.ctx} tokens, {args.threads} threads, llama input "
            f"{args.llama_type.upper()} (cores {os.cpu_count()})",
            flush=True,
        )
        llama = measured(
            "llama",
            [
                str(tool),
                "-m",
                str(gguf),
                "-f",
                str(text),
                "-c",
                str(args.ctx),
                "--chunks",
                str(args.chunks),
                "-t",
                str(args.threads),
                "--no-ppl",
                "-o",
                str(work / "llama.gguf"),
            ],
        )
        ours = measured(
            "ours", [*CLI, "imatrix", str(src), "-o", str(work / "ours.gguf"), "--text", str(text), *common, "--force"]
        )
        print(f"ours / llama: wall {ours[0] / llama[0]:.2f}x, peak RSS {ours[1] / llama[1]:.2f}x (target <= 2x wall)")
        if args.profile:
            prof = work / "ours.prof"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cProfile",
                    "-o",
                    str(prof),
                    "-m",
                    "exaone_gguf",
                    "imatrix",
                    str(src),
                    "-o",
                    str(work / "ours-prof.gguf"),
                    "--text",
                    str(text),
                    *common,
                    "--force",
                ],
                check=True,
                stderr=subprocess.DEVNULL,
            )
            import pstats

            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(15)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
