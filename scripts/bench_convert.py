#!/usr/bin/env python
"""Benchmark `exaone-gguf convert` against a plain copy and llama.cpp's own converter (a benchmark, not a test).

For each model config (default: the real EXAONE-4.0-1.2B config.json in ../shared/fixtures) it makes a
full-size random BF16 checkpoint with `make-tiny --from-config` (the config is copied to a temp file with
dtype/torch_dtype set to bfloat16, since make-tiny writes the dtype the config names), then times, in the
same run, each contender as its own subprocess:

  copy           `cp` of the checkpoint's safetensors files (the same bytes, no conversion)
  ours bf16/f16  `python -m exaone_gguf convert SRC -o OUT --outtype bf16|f16`
  llama.cpp      `convert_hf_to_gguf.py SRC --outfile OUT --outtype bf16|f16` (its vendored gguf-py first
                 on PYTHONPATH; needs torch + transformers in this Python, i.e. the `reference` extra)

Fairness: before each contender, earlier outputs are deleted and the system is synced (no writeback of a
previous run is charged to the next), then the source is read once (warm page cache, as far as it fits in
memory). "s" is the contender's wall time plus an `os.sync()` right after it, so every contender pays for
putting its bytes on disk (our converter fsyncs itself; cp and llama.cpp's writer do not). Peak RSS is
the child's ru_maxrss from os.wait4.

Finding llama.cpp's converter, in order: --llama-convert PATH; env LLAMA_CPP_CONVERT; else the llama.cpp
source of the installed llama-cpp-python's sdist, fetched once into a cache outside the repository by
scripts/llama_tools.py (source_dir()). When that fails (or torch / transformers are missing) the script says
so and skips that baseline.

  /work/venv/bin/python scripts/bench_convert.py                      # 1.2B shape, bf16 + f16
  /work/venv/bin/python scripts/bench_convert.py --config ../shared/fixtures/exaone-3.0-7.8B-instruct/config.json

Quantized sources (issue 23): `--source fp8` / `--source gptq` (repeatable; default bf16) turn the BF16
checkpoint's decoder Linears into FP8 (e4m3, 128x128 block scales `weight_scale_inv`, K-EXAONE's layout) or
GPTQ (4-bit symmetric, group 128, checkpoint_format gptq, g_idx) before timing, so every contender converts the
same quantized source (ours dequantizes it exactly; llama.cpp's converter dequantizes it with torch).

  /work/venv/bin/python scripts/bench_convert.py --source fp8 --source gptq --outtypes bf16,q8_0

Measured (2026-12-07, this 2-core shared machine, 1.2B shape, one run each; wall s incl. sync / peak RSS MB):
    FP8 source (1.49 GB): copy 9.9 s / 59 MB; ours bf16 85.7 s / 203 MB; llama.cpp bf16 318.3 s / 1972 MB
    GPTQ source (0.98 GB): copy 12.1 s / 59 MB; ours bf16 104.1 s / 215 MB; llama.cpp bf16 565.0 s / 1976 MB
  (ours 0.27x and 0.18x llama.cpp's time at a tenth of its memory; the machine was shared with other jobs, so
  the times are loose. The "1.5x copy" target is for BF16 sources: a quantized one must be dequantized.)

Every multi-GB file is deleted at the end (unless --keep). No assertions: it prints a table and the
targets (bf16: <= 0.5x llama.cpp, <= 1.5x copy; peak RSS <= 512 MB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
DEFAULT_CONFIG = FIXTURES / "exaone-4.0-1.2B" / "config.json"
DEFAULT_TOKENIZER = FIXTURES / "exaone-4.0-1.2B"
TARGET_RSS_MB = 512
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


@dataclass
class Run:
    name: str
    outtype: str
    seconds: float  # wall time of the process + the sync after it
    run_seconds: float  # wall time of the process alone
    rss_mb: float
    ok: bool
    note: str = ""


# ---------------------------------------------------------------- helpers


def run_measured(cmd: list[str], env: dict | None = None, log: Path | None = None) -> tuple[float, float, float, bool]:
    """Run `cmd`; return (process wall s, wall s incl. a sync after it, peak RSS MB, succeeded)."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        p.returncode = os.waitstatus_to_exitcode(status)
        os.sync()
        t2 = time.perf_counter()
    finally:
        if log:
            out.close()
    return t1 - t0, t2 - t0, usage.ru_maxrss / 1024, p.returncode == 0  # ru_maxrss is in KiB on Linux


def warm(files: list[Path]) -> None:
    """Read the source once so every contender starts from the same (warm) page cache."""
    buf = bytearray(16 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def bf16_config(src: Path, dst: Path) -> None:
    cfg = json.loads(src.read_text())
    for key in ("dtype", "torch_dtype"):
        cfg[key] = "bfloat16"  # make-tiny writes the dtype the config names; the benchmark wants BF16
    dst.write_text(json.dumps(cfg, indent=2))


QUANTIZED_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANT_CONFIGS = {
    "fp8": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]},
    "gptq": {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 128,
        "sym": True,
        "desc_act": False,
        "checkpoint_format": "gptq",
    },
}


def quantize_source(src: Path, dst: Path, kind: str) -> None:
    """A copy of the BF16 checkpoint `src` whose decoder Linears are FP8 or GPTQ (QUANT_CONFIGS), written layer
    by layer (round to nearest; the layout is what matters here, not the calibration)."""
    from functools import lru_cache

    import numpy as np
    import torch

    from exaone_gguf.checkpoint import load_tensors
    from exaone_gguf.checkpoint.grouped import pack_bits
    from exaone_gguf.checkpoint.st_writer import TensorSource, write_checkpoint_weights

    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json":
            shutil.copy(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = QUANT_CONFIGS[kind]
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))

    @lru_cache(maxsize=1)  # the parts of one layer are written one after another
    def layer(h) -> tuple[np.ndarray, ...]:
        w = h.to_f32()
        n, k = w.shape
        if kind == "fp8":
            b = 128
            pad = np.zeros((-(-n // b) * b, -(-k // b) * b), np.float32)
            pad[:n, :k] = np.abs(w)
            blocks = pad.reshape(pad.shape[0] // b, b, pad.shape[1] // b, b)
            scale = np.maximum(blocks.max((1, 3)), 1e-12) / 448  # e4m3's largest value is 448
            full = np.repeat(np.repeat(scale, b, 0), b, 1)[:n, :k]
            w8 = torch.from_numpy(w / full).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            return w8, scale.astype(np.float32)
        g = w.reshape(n, k // 128, 128)
        s = (np.maximum(np.abs(g).max(-1), 1e-6) / 7).astype(np.float16)
        q = np.clip(np.round(g / s.astype(np.float32)[..., None]) + 8, 0, 15).astype(np.uint32).reshape(n, k)
        zeros = np.full((k // 128, n), 7, np.uint32)  # v1: zero 8 stored minus one
        return pack_bits(q.T, 4, 0), pack_bits(zeros, 4, 1), s.T.copy(), (np.arange(k) // 128).astype(np.int32)

    out = []
    for name, h in load_tensors(src).items():
        if not any(f".{p}.weight" in name for p in QUANTIZED_LINEARS):
            out.append(TensorSource(name, h.dtype, h.shape, lambda h=h: [h.raw()]))
            continue
        n, k = h.shape
        p = name.removesuffix(".weight")
        if kind == "fp8":
            parts = [(name, "F8_E4M3", (n, k)), (name + "_scale_inv", "F32", (-(-n // 128), -(-k // 128)))]
        else:
            parts = [(p + ".qweight", "I32", (k // 8, n)), (p + ".qzeros", "I32", (k // 128, n // 8))]
            parts += [(p + ".scales", "F16", (k // 128, n)), (p + ".g_idx", "I32", (k,))]
        out += [TensorSource(pn, dt, shape, lambda h=h, i=i: [layer(h)[i]]) for i, (pn, dt, shape) in enumerate(parts)]
    write_checkpoint_weights(dst, out)


def checkpoint_bytes(config: Path) -> int:
    from exaone_gguf.checkpoint.spec import read_config
    from exaone_gguf.families import family_for, parse_config

    spec = parse_config(read_config(config), config)
    return sum(2 * math.prod(m.hf_shape) for m in family_for(spec).tensor_map(spec))


# ---------------------------------------------------------------- llama.cpp's converter


def find_llama_convert(args: argparse.Namespace) -> tuple[Path | None, str]:
    """(path to convert_hf_to_gguf.py or None, how it was found / why it is unavailable)."""
    if args.llama_convert:
        p = Path(args.llama_convert)
        return (p, "--llama-convert") if p.is_file() else (None, f"--llama-convert {p} is not a file")
    if os.environ.get("LLAMA_CPP_CONVERT"):
        p = Path(os.environ["LLAMA_CPP_CONVERT"])
        return (p, "$LLAMA_CPP_CONVERT") if p.is_file() else (None, f"$LLAMA_CPP_CONVERT={p} is not a file")
    sys.path.insert(0, str(ROOT / "scripts"))
    import llama_tools

    try:
        src = llama_tools.source_dir()
    except llama_tools.ToolsError as e:
        return None, f"scripts/llama_tools.py could not fetch llama.cpp's source: {e}"
    return src / "convert_hf_to_gguf.py", f"llama-cpp-python {llama_tools.version()} sdist via scripts/llama_tools.py"


def llama_env(script: Path) -> tuple[dict | None, str]:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"{', '.join(missing)} not installed in {sys.executable} (install the reference extra)"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(script.parent / "gguf-py"), str(script.parent)])
    return env, ""


# ---------------------------------------------------------------- one model


def bench_model(
    config: Path, args: argparse.Namespace, work: Path, llama: Path | None, llama_why: str, kind: str = "bf16"
) -> list[Run]:
    need = checkpoint_bytes(config)
    name = config.parent.name + ("" if kind == "bf16" else f" ({kind} source)")
    print(f"\n=== {name}: {gb(need)} of BF16 weights, machine memory {gb(mem_total())} ===", flush=True)
    free = shutil.disk_usage(work).free
    if free < 2 * need + (1 << 30):
        print(f"skipped: {work} has {gb(free)} free, needs {gb(2 * need)} (source + one output at a time)")
        return []
    src = work / f"src-{config.parent.name}-{kind}"
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    runs: list[Run] = []
    try:
        base = src if kind == "bf16" else work / f"bf16-{config.parent.name}"  # one BF16 model for every source
        if not base.exists():
            cfg = work / f"config-{config.parent.name}-bf16.json"
            bf16_config(config, cfg)
            t0 = time.perf_counter()
            make = [sys.executable, "-m", "exaone_gguf", "make-tiny", str(base), "--from-config", str(cfg), "--force"]
            if args.tokenizer_dir:
                make += ["--tokenizer-dir", str(args.tokenizer_dir)]
            subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
            print(f"make-tiny: {time.perf_counter() - t0:.1f} s", flush=True)
        if kind != "bf16":
            t0 = time.perf_counter()
            # in a child process: this process stays small, so the contenders it forks start small (their
            # peak RSS would otherwise include this process's pages at the fork)
            child = multiprocessing.get_context("fork").Process(target=quantize_source, args=(base, src, kind))
            child.start()
            child.join()
            if child.exitcode:
                raise SystemExit(f"writing the {kind} source failed (exit {child.exitcode})")
            print(f"{kind} source written in {time.perf_counter() - t0:.1f} s", flush=True)
        files = sorted(src.glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files)
        print(f"source: {len(files)} safetensors file(s), {gb(size)}", flush=True)

        def contender(label: str, outtype: str, cmd: list[str], out: Path, env: dict | None = None) -> None:
            best: Run | None = None
            for _ in range(args.repeat):
                shutil.rmtree(out_dir, ignore_errors=True)
                out_dir.mkdir()
                os.sync()
                warm(files)
                log = work / f"{label.replace(' ', '_')}-{outtype}.log"
                run_s, s, rss, ok = run_measured(cmd, env, log)
                note = "" if ok else f"failed, see {log}: " + log.read_text(errors="replace").strip()[-300:]
                r = Run(label, outtype, s, run_s, rss, ok, note)
                if best is None or (r.ok and r.seconds < best.seconds):
                    best = r
            assert best is not None
            runs.append(best)
            status = f"{best.seconds:6.2f} s (process {best.run_seconds:.2f} s), peak RSS {best.rss_mb:7.1f} MB"
            print(f"  {label:10s} {outtype:5s} {status}" + ("" if best.ok else f"  {best.note}"), flush=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir()

        contender("copy", "-", ["cp", *map(str, files), str(out_dir)], out_dir)
        for t in args.outtypes:
            out = out_dir / f"ours-{t}.gguf"
            contender(
                "ours",
                t,
                [sys.executable, "-m", "exaone_gguf", "convert", str(src), "-o", str(out), "--outtype", t],
                out,
            )
        if llama is None:
            print(f"  llama.cpp  skipped: {llama_why}")
        else:
            env, why = llama_env(llama)
            if env is None:
                print(f"  llama.cpp  skipped: {why}")
            else:
                for t in args.outtypes:
                    out = out_dir / f"llama-{t}.gguf"
                    cmd = [sys.executable, str(llama), str(src), "--outfile", str(out), "--outtype", t]
                    contender("llama.cpp", t, cmd, out, env)
    finally:
        if not args.keep:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)
    table(name, size if runs else need, runs)
    return runs


def table(name: str, size: int, runs: list[Run]) -> None:
    copy = next((r for r in runs if r.name == "copy" and r.ok), None)
    llama = {r.outtype: r for r in runs if r.name == "llama.cpp" and r.ok}
    print(f"\n{name} ({gb(size)}), warm source, times include flushing the output to disk:")
    print(f"{'contender':<16}{'wall s':>9}{'peak RSS MB':>13}{'vs copy':>9}{'vs llama.cpp':>14}")
    for r in runs:
        label = r.name if r.outtype == "-" else f"{r.name} {r.outtype}"
        if not r.ok:
            print(f"{label:<16}{'failed':>9}")
            continue
        vs_copy = f"{r.seconds / copy.seconds:.2f}x" if copy else "-"
        lr = llama.get(r.outtype)
        vs_llama = f"{r.seconds / lr.seconds:.2f}x" if lr and r.name != "llama.cpp" else "-"
        print(f"{label:<16}{r.seconds:>9.2f}{r.rss_mb:>13.1f}{vs_copy:>9}{vs_llama:>14}")
    ours = next((r for r in runs if r.name == "ours" and r.outtype == "bf16" and r.ok), None)
    if ours:
        checks = []
        if "bf16" in llama:
            checks.append(("bf16 <= 0.5x llama.cpp", ours.seconds <= 0.5 * llama["bf16"].seconds))
        if copy:
            checks.append(("bf16 <= 1.5x copy", ours.seconds <= 1.5 * copy.seconds))
        peak = max(r.rss_mb for r in runs if r.name == "ours" and r.ok)
        checks.append((f"ours peak RSS <= {TARGET_RSS_MB} MB", peak <= TARGET_RSS_MB))
        print("targets: " + "; ".join(f"{c}: {'met' if ok else 'MISSED'}" for c, ok in checks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--config", type=Path, action="append", help=f"model config.json (repeatable; default {DEFAULT_CONFIG})"
    )
    ap.add_argument("--tokenizer-dir", type=Path, default=DEFAULT_TOKENIZER, help="real tokenizer files for make-tiny")
    ap.add_argument("--outtypes", default="bf16,f16", help="comma list of output types (default bf16,f16)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the multi-GB files go (default: a temp dir)")
    ap.add_argument("--llama-convert", default=None, help="path to llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; the fastest is reported")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and outputs")
    ap.add_argument(
        "--source", action="append", choices=("bf16", "fp8", "gptq"), help="source format (repeatable; default bf16)"
    )
    args = ap.parse_args()
    args.outtypes = [t.strip() for t in args.outtypes.split(",") if t.strip()]
    configs = args.config or [DEFAULT_CONFIG]
    for c in configs:
        if not c.is_file():
            sys.exit(f"{c}: config.json not found.")
    if args.tokenizer_dir and not args.tokenizer_dir.is_dir():
        print(f"note: tokenizer dir {args.tokenizer_dir} not found; make-tiny writes its own tokenizer")
        args.tokenizer_dir = None
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)  # a new --work-dir is fine
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.work_dir))
    try:
        llama, how = find_llama_convert(args)
        print(f"llama.cpp converter: {llama} ({how})" if llama else f"llama.cpp converter unavailable: {how}")
        for c in configs:
            for kind in args.source or ["bf16"]:
                bench_model(c, args, work, llama, how, kind)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
