#!/usr/bin/env python
"""Benchmark `exaone-gguf convert --mmproj` against a plain copy and llama.cpp's own converter (not a test).

Makes a random BF16 checkpoint holding only the vision tower of the real EXAONE 4.5 33B config
(../shared/fixtures/exaone-4.5-33b: depth 32, hidden 1280, ~0.67B parameters, 1.3 GB), then times, in the same
run and each as its own subprocess (outputs deleted and the system synced before each, os.sync() after):

  copy        `cp` of the safetensors file (the same bytes, no conversion)
  ours f16    `python -m exaone_gguf convert SRC --mmproj -o OUT --outtype f16`
  llama.cpp   `convert_hf_to_gguf.py SRC --mmproj --outfile OUT --outtype f16` (vendored gguf-py first)

Peak RSS is the child's ru_maxrss from os.wait4; this process stays small (the source is made in a child, the
page cache warmed by `cat`), since a child's ru_maxrss starts from its parent's resident pages at the fork. Prints a table with ratios and the load average; deletes its
files at the end. Run it under the machine-wide lock: flock /tmp/heavy.lock python scripts/bench_mmproj.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "exaone-4.5-33b"


def make_source(dst: Path) -> int:
    from exaone_gguf.checkpoint.st_writer import TensorSource, write_checkpoint_weights
    from exaone_gguf.elements import f32_to_bf16_bits
    from exaone_gguf.vision.config import read_vision_spec
    from exaone_gguf.vision.tensors import expected_shapes

    dst.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(FIXTURE / name, dst / name)
    spec = read_vision_spec(dst)
    rng = np.random.default_rng(0)

    def produce(shape):
        def gen():
            rows, per = shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1
            step = max(1, (4 << 20) // per)
            for r in range(0, rows, step):
                n = min(step, rows - r) * per
                yield f32_to_bf16_bits((rng.standard_normal(n, dtype=np.float32) * 0.02).reshape(-1))

        return gen

    tensors = [
        TensorSource("model.visual." + k, "BF16", s, produce(s)) for k, s in sorted(expected_shapes(spec).items())
    ]
    write_checkpoint_weights(dst, tensors)
    return sum(t.nbytes for t in tensors)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    os.sync()
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--make-source", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_source:  # in a child: a child's ru_maxrss counts its parent's resident pages at the fork
        print(make_source(args.make_source))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-mmproj-", dir=args.workdir))
    try:
        src = work / "src"
        made = subprocess.run(
            [sys.executable, __file__, "--make-source", str(src)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
            text=True,
        )
        nbytes = int(made.stdout.split()[-1])
        spec = importlib.util.spec_from_file_location("llama_tools", ROOT / "scripts" / "llama_tools.py")
        lt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lt)
        llama_src = lt.source_dir()
        subprocess.run(["cat", str(src / "model.safetensors")], stdout=subprocess.DEVNULL, check=True)  # warm cache
        rows = []
        out = work / "out"
        out.mkdir()
        runs = [
            ("copy", ["cp", str(src / "model.safetensors"), str(out / "copy.safetensors")], None),
            (
                "ours f16",
                [sys.executable, "-m", "exaone_gguf", "convert", str(src), "--mmproj", "-o", str(out / "o.gguf")],
                {**os.environ, "PYTHONPATH": str(ROOT)},
            ),
            (
                "llama.cpp f16",
                [sys.executable, str(llama_src / "convert_hf_to_gguf.py"), str(src), "--mmproj"]
                + ["--outfile", str(out / "l.gguf"), "--outtype", "f16"],
                {**os.environ, "PYTHONPATH": os.pathsep.join([str(llama_src / "gguf-py"), str(llama_src)])},
            ),
        ]
        for name, cmd, env in runs:
            for p in out.iterdir():
                p.unlink()
            rows.append((name, *timed(cmd, env)))
        base = {r[0]: r for r in rows}
        print(f"vision tower of EXAONE 4.5 33B, BF16 source {nbytes / 1e9:.2f} GB, load average {os.getloadavg()}")
        print(f"{'contender':<14} {'s':>7} {'x copy':>7} {'x llama.cpp':>11} {'peak RSS MB':>12}")
        for name, s, rss in rows:
            print(f"{name:<14} {s:7.1f} {s / base['copy'][1]:7.2f} {s / base['llama.cpp f16'][1]:11.2f} {rss:12.0f}")
        print(json.dumps({r[0]: {"seconds": round(r[1], 2), "peak_rss_mb": round(r[2])} for r in rows}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
