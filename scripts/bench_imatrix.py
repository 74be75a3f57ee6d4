#!/usr/bin/env python3
"""Benchmark (issue 15 item 4): `exaone-gguf imatrix` against llama-imatrix on the EXAONE-4.0-1.2B shape, same
text, context, chunks and threads, in the same run.

    flock /tmp/heavy.lock python scripts/bench_imatrix.py [--work-dir DIR] [--threads 2] [--chunks 4] [--ctx 512]
        [--repeat N] [--profile]

Makes a full-size EXAONE-4.0-1.2B-shaped checkpoint with random BF16 weights (make-tiny --from-config on
../shared/fixtures/exaone-4.0-1.2B/config.json with its tokenizer), converts it to a BF16 GGUF (llama-imatrix's
input; --llama-type f32 for an F32 one), writes the built-in calibration text to a file, then times, each as
its own subprocess (wall time; peak RSS and CPU time from wait4):

  ours    exaone-gguf imatrix SRC --text FILE --ctx C --chunks N --threads T   (numpy float32 reference forward)
  llama   llama-imatrix -m GGUF -f FILE -c C --chunks N -t T --no-ppl          (ggml)

and prints wall and CPU (user + system) time, peak RSS, the load average beside each, and the ratios ours / llama.
`--repeat N` runs each N times in alternating order (the machine is shared: load drifts), ratios over the sums.
Nothing here is asserted; tests never time anything. `--profile` runs ours once more under cProfile and prints
where the time goes.

Measured (2 cores shared with other sessions, so load is the 1-minute average beside each run; defaults: 4 chunks
of 512, 2 threads, BF16 GGUF for llama-imatrix):

  before grouping (one forward per chunk, head computed, [T, T] attention): ours 114 s / 474 MB against
    llama 39 s / 3.2 GB (quiet), 2.9x; profile: products 41 %, attention 31 %, BF16 widening 14 %, head 8 %
  now, --repeat 2 at load 3.4-4.2: llama 68.6 + 61.1 s (CPU 67.8 + 60.4 s, 3619 MB), ours 63.2 + 65.3 s
    (CPU 67.4 + 69.2 s, 390 MB): wall 0.99x, CPU 1.06x, RSS 0.11x
  again at load 3.7-4.7: llama 63.0 + 65.6 s (CPU 61.6 + 65.3 s), ours 66.2 + 61.9 s (CPU 65.2 + 61.5 s, 391 MB):
    wall 1.00x, CPU 1.00x; single runs: 1.23x at load 2.9-3.5 (llama 54.5 s, ours 66.9 s), 1.20x at load
    4.7-4.9 (77.9 s, 93.2 s); at load 4.0-5.2 the pre-grouping code measured 2.01x (105.4 s, 212.4 s)
  profile (load ~2.5, 31.7 s in all): the matrix products 24.1 s (76 %: 4.4 TFLOP at ~180 GFLOPS, OpenBLAS
    SkylakeX sgemm), attention 3.2 s, BF16 widening 1.1 s, rmsnorm 0.8 s, RoPE 0.4 s, SiLU 0.4 s, the
    collector's sums 0.15 s; the output head is not computed (llama-imatrix does compute its logits)
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


def measured(name: str, cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds: user + system) of one child process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            out.seek(0)
            sys.exit(f"{name} failed:\n{out.read()[-3000:]}")
    rss, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    print(
        f"  {name:<6} {wall:8.1f} s  CPU {cpu:8.1f} s  peak RSS {rss:8.0f} MB  load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return wall, rss, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--llama-type", choices=("bf16", "f32"), default="bf16")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, in alternating order")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    import llama_tools

    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model.texts import checkpoint_calibration_text

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
        text = work / "calibration.txt"
        text.write_text(checkpoint_calibration_text(load_checkpoint(src).tokenizer), encoding="utf-8")
        tool = llama_tools.tools()["llama-imatrix"]
        print(
            f"1.2B shape, {args.chunks} chunks of {args.ctx} tokens, {args.threads} threads, llama input "
            f"{args.llama_type.upper()} (cores {os.cpu_count()})",
            flush=True,
        )
        cmds = {
            "llama": [
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
            "ours": [
                *CLI,
                "imatrix",
                str(src),
                "-o",
                str(work / "ours.gguf"),
                "--text",
                str(text),
                "--ctx",
                str(args.ctx),
                "--chunks",
                str(args.chunks),
                "--threads",
                str(args.threads),
                "--force",
            ],
        }
        runs: dict[str, list[tuple[float, float, float]]] = {"llama": [], "ours": []}
        for i in range(args.repeat):  # alternating order (llama ours, ours llama, ...): load drifts hit both
            for name in ("llama", "ours") if i % 2 == 0 else ("ours", "llama"):
                runs[name].append(measured(name, cmds[name]))
        llama, ours = ([sum(col) for col in zip(*runs[n])] for n in ("llama", "ours"))
        print(
            f"ours / llama: wall {ours[0] / llama[0]:.2f}x, CPU {ours[2] / llama[2]:.2f}x, "
            f"peak RSS {ours[1] / llama[1]:.2f}x (target <= 2x wall; sums over {args.repeat} run(s) each)"
        )
        if args.profile:
            prof = work / "ours.prof"
            # the same command as the timed run, under cProfile
            ours_args = cmds["ours"][len(CLI) :]
            subprocess.run(
                [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "exaone_gguf", *ours_args],
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
