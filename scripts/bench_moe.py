#!/usr/bin/env python
"""Benchmark `exaone-gguf convert` on a K-EXAONE-shaped checkpoint against llama.cpp's converter (issue 12 item 5;
a benchmark, not a test).

The checkpoint has K-EXAONE's real widths and head layout (../shared/fixtures/k-exaone-236b-a23b/config.json:
hidden 6144, 64 q heads / 8 kv heads of 128, 128 routed experts of moe_intermediate 2048, one shared expert,
dense intermediate 18432) but only `--layers` layers (default 2: the leading dense layer and one MoE layer,
~11 GB BF16), no MTP block, and make-tiny's small K-EXAONE tokenizer (vocab 4096 instead of 153600, so the
embedding and output matrices are 50 MB each instead of 1.9 GB: the benchmark is about the experts). Experts are
per-expert tensors as LG publishes them (`mlp.experts.{x}.gate_proj.weight` ...), random BF16, written streamed
by make-tiny (its safetensors writer never holds a tensor whole). The checkpoint is built once and cached in
--work-dir (default ~/.cache/exaone-gguf/bench-moe, or under $EXAONE_GGUF_TOOLS_CACHE); --clean deletes it at the
end.

Contenders, each its own child process, same run, same warm page cache (the source is read once before each):
  ours bf16 / q8_0      python -m exaone_gguf convert SRC -o OUT --outtype bf16|q8_0
  llama.cpp bf16 / q8_0 vendored convert_hf_to_gguf.py SRC --outfile OUT --outtype bf16|q8_0 (the venv's torch)

llama.cpp's converter recognises a tokenizer by hashing how it tokenizes a fixed text; make-tiny's tokenizer is
not K-EXAONE's, so it is run through a two-line wrapper that answers "exaone-moe" for the pre-tokenizer (what it
would detect on K-EXAONE's real tokenizer). Nothing else of it is changed.

Measured: wall time of the process plus an os.sync() after it (every contender pays for its bytes reaching the
disk), and peak RSS = the child's ru_maxrss (os.wait4). A watchdog kills a child when the machine's
MemAvailable falls under --min-available-gb (this machine is shared; llama.cpp's converter stacks a layer's
128 experts in memory), and the table then says so. After each run the output's tensors (name, type, shape,
sha256 of the bytes) are recorded and the file is deleted, so only one multi-GB output exists at a time; ours and
llama.cpp's are then compared tensor by tensor per outtype.

Measured once (commit 1d58e3b, 2 shared CPU cores, load average 5.1-7.2 from other work; source 10.97 GB):

  contender        wall s  peak RSS MB   output    time vs llama.cpp
  ours bf16          15.9          105   10.98 GB  0.10x
  llama.cpp bf16    155.5        12718   10.98 GB
  ours q8_0          67.9          117    5.83 GB  0.34x
  llama.cpp q8_0    199.2        12671    5.83 GB
  bf16 and q8_0: 30/30 tensors identical to llama.cpp's (name, type, shape, bytes).

  flock /tmp/heavy.lock /work/venv/bin/python scripts/bench_moe.py            # full run (~11 GB source)
  /work/venv/bin/python scripts/bench_moe.py --experts 8 --only ours          # quick check of the script
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "k-exaone-236b-a23b" / "config.json"
# the checkpoint cache, outside the repository like llama_tools' and train_small's ($EXAONE_GGUF_TOOLS_CACHE or
# ~/.cache/exaone-gguf)
DEFAULT_WORK = Path(os.environ.get("EXAONE_GGUF_TOOLS_CACHE") or Path.home() / ".cache" / "exaone-gguf") / "bench-moe"
TARGET_RSS_MB = 1024
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


@dataclass
class Run:
    name: str
    outtype: str
    seconds: float = 0.0  # process wall time + the sync after it
    run_seconds: float = 0.0
    rss_mb: float = 0.0
    ok: bool = False
    note: str = ""
    tensors: dict[str, tuple[str, tuple[int, ...], str]] = field(default_factory=dict)  # name -> (type, shape, sha)
    size: int = 0


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def meminfo(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- the checkpoint


def bench_config(layers: int, experts: int, vocab: int) -> dict:
    """The real K-EXAONE config (LG's first spelling: ExaoneMoEForCausalLM, is_moe_layer) cut to `layers`."""
    cfg = json.loads(FIXTURE.read_text())
    dense = cfg["first_last_k_dense_replace"]
    cfg["num_hidden_layers"] = layers
    cfg["layer_types"] = cfg["layer_types"][:layers]
    cfg["is_moe_layer"] = [i >= dense for i in range(layers)]
    cfg["num_nextn_predict_layers"] = 0
    cfg["num_experts"] = experts
    cfg["num_experts_per_tok"] = min(cfg["num_experts_per_tok"], experts)
    cfg["vocab_size"] = vocab
    cfg["dtype"] = "bfloat16"
    return cfg


def build_checkpoint(src: Path, cfg: dict) -> None:
    """make-tiny --from-config into `src`, unless `src` already holds this very config (the cache)."""
    stamp = src / "config.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == cfg and any(src.glob("*.safetensors")):
        print(f"checkpoint: cached in {src}", flush=True)
        return
    src.parent.mkdir(parents=True, exist_ok=True)
    cfg_file = src.parent / "bench-config.json"
    cfg_file.write_text(json.dumps(cfg, indent=2))
    cmd = [sys.executable, "-m", "exaone_gguf", "make-tiny", str(src), "--from-config", str(cfg_file), "--force"]
    r = measure(cmd, None, src.parent / "make-tiny.log", 0)
    if not r.ok:
        sys.exit(f"make-tiny failed: {r.note}")
    size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    print(f"checkpoint: {gb(size)} written by make-tiny in {r.seconds:.1f} s, peak RSS {r.rss_mb:.0f} MB", flush=True)


# ---------------------------------------------------------------- measuring one child


def measure(cmd: list[str], env: dict | None, log: Path, min_available: int, name: str = "", outtype: str = "") -> Run:
    """Run `cmd` as a child (own process group); wall time, ru_maxrss, and a kill if the machine runs short."""
    run = Run(name, outtype)
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        killed = None
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            avail = meminfo("MemAvailable")
            if min_available and killed is None and avail < min_available:
                killed = f"killed by the watchdog: MemAvailable fell to {gb(avail)} (< {gb(min_available)})"
                os.killpg(p.pid, signal.SIGKILL)
            time.sleep(0.05)
        t1 = time.perf_counter()
        p.returncode = os.waitstatus_to_exitcode(status)
        os.sync()
        t2 = time.perf_counter()
    run.run_seconds, run.seconds, run.rss_mb = t1 - t0, t2 - t0, usage.ru_maxrss / 1024  # KiB on Linux
    run.ok = p.returncode == 0 and killed is None
    if not run.ok:
        tail = log.read_text(errors="replace").strip()[-400:]
        run.note = killed or f"exit {p.returncode}, see {log}: {tail}"
    return run


def warm(files: list[Path]) -> None:
    """Read the source once so every contender starts from the same page cache."""
    buf = bytearray(16 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def tensor_digest(path: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """name -> (type, shape, sha256 of the bytes) of every tensor of a GGUF file (read through its memory map)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    out = {}
    for t in r.tensors:
        h = hashlib.sha256()
        data = t.data.reshape(-1).view("uint8")
        step = 64 << 20
        for i in range(0, data.size, step):
            h.update(data[i : i + step])
        out[t.name] = (t.tensor_type.name, tuple(int(n) for n in t.shape), h.hexdigest())
    return out


def digest_in_child(path: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """tensor_digest in a child process: the mapped pages it touches must not grow this process, whose peak
    RSS every later child would inherit (Linux carries a process's max RSS across fork and exec into ru_maxrss)."""
    code = "import json, sys; sys.path.insert(0, sys.argv[2]); import bench_moe as b; "
    code += "print(json.dumps(b.tensor_digest(__import__('pathlib').Path(sys.argv[1]))))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(ROOT / "scripts")], capture_output=True, check=True
    )
    return {k: (v[0], tuple(v[1]), v[2]) for k, v in json.loads(out.stdout).items()}


# ---------------------------------------------------------------- llama.cpp's converter


def llama_runner(work: Path) -> tuple[Path, dict]:
    """A wrapper running the vendored convert_hf_to_gguf.py with the pre-tokenizer answered as 'exaone-moe'."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import llama_tools

    src = llama_tools.source_dir()
    script = src / "convert_hf_to_gguf.py"
    runner = work / "llama_convert_exaone_moe.py"
    runner.write_text(
        "import runpy, sys\n"
        f"sys.argv[0] = {str(script)!r}\n"
        "import conversion.base as base\n"
        "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'exaone-moe'  # make-tiny's tokenizer\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src / "gguf-py"), str(src)])
    return runner, env


# ---------------------------------------------------------------- report


def compare(ours: Run, llama: Run) -> str:
    a, b = ours.tensors, llama.tensors
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        return f"different tensor sets: only ours {only_a[:5]}, only llama.cpp {only_b[:5]}"
    same = [n for n in a if a[n] == b[n]]
    diff_type = [n for n in a if a[n][0] != b[n][0]]
    diff_shape = [n for n in a if a[n][1] != b[n][1]]
    diff_bytes = [n for n in a if a[n][:2] == b[n][:2] and a[n][2] != b[n][2]]
    msg = f"{len(same)}/{len(a)} tensors identical (name, type, shape, bytes)"
    if diff_type:
        msg += "; type differs: " + ", ".join(f"{n} ours {a[n][0]} / llama.cpp {b[n][0]}" for n in diff_type[:6])
    if diff_shape:
        msg += f"; shape differs: {diff_shape[:6]}"
    if diff_bytes:
        msg += f"; same type, bytes differ: {diff_bytes[:6]}"
    return msg


def table(runs: list[Run], size: int, load: tuple[float, float, float]) -> None:
    llama = {r.outtype: r for r in runs if r.name == "llama.cpp"}
    print(f"\nK-EXAONE widths, source {gb(size)} BF16 (warm page cache; times include flushing the output):")
    print(f"{'contender':<18}{'wall s':>9}{'peak RSS MB':>13}{'output':>11}{'time vs llama.cpp':>19}{'RSS vs':>9}")
    for r in runs:
        label = f"{r.name} {r.outtype}"
        if not r.ok:
            print(f"{label:<18}{'failed':>9}{r.rss_mb:>13.0f}   {r.note}")
            continue
        lr = llama.get(r.outtype)
        vs = f"{r.seconds / lr.seconds:.2f}x" if r.name == "ours" and lr is not None and lr.ok else "-"
        vr = f"{r.rss_mb / lr.rss_mb:.3f}x" if r.name == "ours" and lr is not None and lr.rss_mb else "-"
        print(f"{label:<18}{r.seconds:>9.1f}{r.rss_mb:>13.0f}{gb(r.size):>11}{vs:>19}{vr:>9}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; at end: {os.getloadavg()[0]:.2f}")
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"this script's own peak RSS {parent:.0f} MB (a child's ru_maxrss is at least its parent's RSS at fork)")
    checks = []
    for r in runs:
        if r.name != "ours" or not r.ok:
            continue
        checks.append((f"ours {r.outtype} peak RSS < {TARGET_RSS_MB} MB", r.rss_mb < TARGET_RSS_MB))
        lr = llama.get(r.outtype)
        if lr is not None and lr.ok:
            checks.append((f"ours {r.outtype} <= 0.5x llama.cpp's time", r.seconds <= 0.5 * lr.seconds))
            print(f"{r.outtype}: {compare(r, lr)}")
        elif lr is not None:
            print(f"{r.outtype}: llama.cpp's run failed ({lr.note}); no time ratio, no byte comparison")
    print("targets: " + "; ".join(f"{c}: {'met' if ok else 'MISSED'}" for c, ok in checks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="checkpoint cache and outputs")
    ap.add_argument("--layers", type=int, default=2, help="layers (the first is dense); default 2")
    ap.add_argument("--experts", type=int, default=128, help="routed experts (K-EXAONE: 128); fewer for a quick check")
    ap.add_argument("--vocab", type=int, default=4096, help="vocab size (make-tiny's K-EXAONE tokenizer: 4096)")
    ap.add_argument("--outtypes", default="bf16,q8_0")
    ap.add_argument("--only", choices=("ours", "llama.cpp"), default=None, help="run one side only")
    ap.add_argument("--min-available-gb", type=float, default=1.5, help="watchdog: kill a child below this")
    ap.add_argument("--clean", action="store_true", help="delete the checkpoint too at the end")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the checkpoint and stop")
    args = ap.parse_args()
    outtypes = [t.strip() for t in args.outtypes.split(",") if t.strip()]
    load = os.getloadavg()
    work = args.work_dir
    src, out_dir = work / "src", work / "out"
    cfg = bench_config(args.layers, args.experts, args.vocab)
    build_checkpoint(src, cfg)
    if args.build_only:
        return
    files = sorted(src.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    min_avail = int(args.min_available_gb * 1e9)
    runs: list[Run] = []
    try:
        contenders: list[tuple[str, str, list[str], dict | None]] = []
        for t in outtypes:
            if args.only in (None, "ours"):
                cmd = [sys.executable, "-m", "exaone_gguf", "convert", str(src), "-o", str(out_dir / f"ours-{t}.gguf")]
                contenders.append(("ours", t, cmd + ["--outtype", t], None))
            if args.only in (None, "llama.cpp"):
                runner, env = llama_runner(work)
                cmd = [sys.executable, str(runner), str(src), "--outfile", str(out_dir / f"llama-{t}.gguf")]
                contenders.append(("llama.cpp", t, cmd + ["--outtype", t], env))
        for name, t, cmd, env in contenders:
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True)
            os.sync()
            warm(files)
            r = measure(cmd, env, work / f"{name}-{t}.log", min_avail, name, t)
            out = next(out_dir.glob("*.gguf"), None)
            if r.ok and out is not None:
                r.size = out.stat().st_size
                r.tensors = digest_in_child(out)
            status = f"{r.seconds:7.1f} s (process {r.run_seconds:.1f} s), peak RSS {r.rss_mb:8.0f} MB"
            print(f"  {name:10s} {t:5s} {status}" + ("" if r.ok else f"  {r.note}"), flush=True)
            runs.append(r)
            shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if args.clean:
            shutil.rmtree(src, ignore_errors=True)
    table(runs, size, load)


if __name__ == "__main__":
    main()
