#!/usr/bin/env python3
"""Benchmark: one-pass HF -> Q8_0 / Q4_K_M against llama.cpp's quantizer, in the same run.

    python scripts/bench_quantize.py [--workdir DIR] [--threads 2] [--keep]

Makes a full-size EXAONE-4.0-1.2B-shaped checkpoint with random BF16 weights (make-tiny --from-config on
../shared/fixtures/exaone-4.0-1.2B/config.json, dtype set to bfloat16; 2.56 GB), converts it once to a BF16 GGUF
(the input llama.cpp's quantizer needs), then times, each as its own subprocess:

  ours    exaone-gguf convert SRC --outtype q8_0 / q4_k_m   (checkpoint -> quantized GGUF, one pass)
  llama   llama_model_quantize(BF16 GGUF -> same type)     (llama-cpp-python, same thread count)

and prints wall time, peak RSS (per child, from wait4) and the ratios, plus whether our Q4_K_M output is
identical for 1 and N threads. No figure here is asserted anywhere; tests never time anything.
"""

from __future__ import annotations

import argparse
import hashlib
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


def run(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB of that child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


LLAMA_QUANTIZE = """
import ctypes, sys, llama_cpp
from exaone_gguf.quantize.mixtures import file_type_value
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = file_type_value(sys.argv[3]); p.nthread = int(sys.argv[4])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="where the 2.56 GB checkpoint and outputs go (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    work.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "exaone_gguf"]
    try:
        src = work / "exaone4-1.2b-bf16"
        if not (src / "config.json").exists():
            cfg = json.loads((FIXTURE / "config.json").read_text())
            cfg["dtype"] = cfg["torch_dtype"] = "bfloat16"
            cfg_path = work / "config-bf16.json"
            cfg_path.write_text(json.dumps(cfg))
            print("making the 1.2B-shaped checkpoint ...", flush=True)
            subprocess.run(
                exe + ["make-tiny", "--from-config", str(cfg_path), str(src), "--tokenizer-dir", str(FIXTURE)],
                check=True,
            )
        bf16 = work / "bf16.gguf"
        if not bf16.exists():
            subprocess.run(exe + ["convert", str(src), "-o", str(bf16), "--outtype", "bf16"], check=True)
        n = str(args.threads)
        rows = []
        for qtype in ("q8_0", "q4_k_m"):
            ours = work / f"ours-{qtype}.gguf"
            llama = work / f"llama-{qtype}.gguf"
            for p in (ours, llama):
                p.unlink(missing_ok=True)
            t_ours, rss_ours = run(exe + ["convert", str(src), "-o", str(ours), "--outtype", qtype, "--threads", n])
            t_llama, rss_llama = run([sys.executable, "-c", LLAMA_QUANTIZE, str(bf16), str(llama), qtype, n])
            rows.append((qtype, t_ours, rss_ours, t_llama, rss_llama))
        q4 = work / "ours-q4_k_m.gguf"
        q4_1t = work / "ours-q4_k_m-1thread.gguf"
        q4_1t.unlink(missing_ok=True)
        run(exe + ["convert", str(src), "-o", str(q4_1t), "--outtype", "q4_k_m", "--threads", "1"])
        same_threads = sha256(q4) == sha256(q4_1t)

        print(f"\nEXAONE-4.0-1.2B-shaped BF16 checkpoint, {args.threads} threads")
        print(f"{'type':8} {'ours s':>8} {'ours MB':>8} {'llama s':>8} {'llama MB':>9} {'ours/llama':>11}")
        for qtype, t_o, r_o, t_l, r_l in rows:
            print(f"{qtype:8} {t_o:8.1f} {r_o:8.0f} {t_l:8.1f} {r_l:9.0f} {t_o / t_l:11.2f}x")
        print("(llama = llama_model_quantize from a BF16 GGUF; it also needs that intermediate file written first,")
        print(" which the one-pass convert does not)")
        print(f"Q4_K_M output identical for 1 and {args.threads} threads: {same_threads}")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
