"""Benchmark: the five-variant publish run against llama.cpp's own route to the same files and against five
single conversions, and inspect against gguf-py.

    python scripts/bench_publish.py CKPT_DIR [--types bf16,q8_0,q6_k,q5_k_m,q4_k_m] [--threads N] [--workdir DIR]
                                    [--repeat N] [--floor] [--no-llama]

1. Copies the source bytes once (baseline, and warms the page cache so every run reads from memory).
2. Runs `exaone-gguf convert CKPT --outtype T -o single.gguf` once per type (separate processes), hashing
   and deleting each output to save disk; then `exaone-gguf convert CKPT --outtype T1,T2,... -o OUT/`.
   Prints each wall time and peak RSS, checks that every variant is byte-identical to its single run, and
   the ratio publish / sum(single) (target: at most 0.6). With --repeat N the singles and the publish run
   take turns N times and each keeps its fastest run (wall and CPU), so a burst of load on a shared machine
   lands on both sides instead of skewing the ratio.
   --floor runs the publish once more with llama.cpp's quantization kernel calls timed: that kernel time is
   work no byte-identical implementation can share between types, so kernel / sum(single) is the lowest
   ratio any one-read design reaches with the same kernels on the same cores.
3. The yardstick, llama.cpp's own route to the same files (tools from scripts/llama_tools.py, built from the
   llama.cpp inside the installed llama-cpp-python's sdist): its `convert_hf_to_gguf.py --outtype bf16` once
   (with its own gguf-py), then `llama-quantize BF16 OUT TYPE THREADS` per quantized type from that BF16 file,
   with the same thread count, in the same run (and the same rounds with --repeat, fastest kept). Prints
   publish / llama.cpp route (target: at most 0.6) beside publish / sum(single), and checks that every
   quantized variant has llama-quantize's tensors: the same names, types and data bytes (metadata differs by
   design: our files carry keys llama.cpp's converter omits); BF16 against its converter's BF16 likewise.
   --no-llama skips it.
4. Times `exaone-gguf inspect` (our reader) and gguf-py's GGUFReader on the Q4_K_M file and checks they
   report the same facts (key count, tensor names, types, shapes, data offsets, parameter count).
A 1.2B-shaped BF16 checkpoint: copy ../shared/fixtures/exaone-4.0-1.2B/config.json with "dtype": "bfloat16", then
    exaone-gguf make-tiny --from-config CONFIG CKPT_DIR --tokenizer-dir ../shared/fixtures/exaone-4.0-1.2B
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

CLI = [sys.executable, "-m", "exaone_gguf"]


def run_rusage(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """(wall seconds, the child's own peak RSS in MB from wait4, its CPU seconds (user + system, which other
    load on the machine disturbs less than wall time), stdout) of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.read()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    return h.hexdigest()


def copy_baseline(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    dst.mkdir()
    for p in sorted(src.glob("*.safetensors")):
        shutil.copyfile(p, dst / p.name)
    return time.perf_counter() - start


def inspect_facts_ours(path: Path) -> tuple[float, dict]:
    wall, _, _, out = run_rusage([*CLI, "inspect", str(path), "--json"])
    s = json.loads(out)
    return wall, {
        "kv_count": s["totals"]["kv_count"],
        "tensors": [(t["name"], t["type"], tuple(t["shape"]), t["offset"]) for t in s["tensors"]],
        "parameters": s["totals"]["parameter_count"],
        "architecture": s["architecture"],
        "n_vocab": s["metadata"]["tokenizer.ggml.tokens"]["length"],
    }


GGUF_PY = r"""
import json, sys, time
t = time.perf_counter()
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
tensors = [(t.name, t.tensor_type.name, [int(x) for x in t.shape], int(t.data_offset)) for t in r.tensors]
kv = [f for f in r.fields if not f.startswith("GGUF.")]
arch = r.fields["general.architecture"]
facts = {"kv_count": len(kv), "tensors": tensors, "parameters": sum(int(t.n_elements) for t in r.tensors),
         "architecture": bytes(arch.parts[arch.data[0]]).decode(), "n_vocab": len(r.fields["tokenizer.ggml.tokens"].data)}
print(json.dumps(facts))
"""


KERNEL_TIMED = r"""
import collections, json, sys, time
import exaone_gguf.quantize.ggml_backend as gb
from exaone_gguf.cli import main
spent, calls = collections.Counter(), gb.quantize_rows
def timed(x, qtype, *a, **k):
    t = time.perf_counter()
    try:
        return calls(x, qtype, *a, **k)
    finally:
        spent[gb.GGMLQuantizationType(qtype).name] += time.perf_counter() - t
gb.quantize_rows = timed
sys.argv = ["exaone-gguf", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    if e.code:
        raise
print(json.dumps(spent))
"""


def kernel_seconds(cmd_args: list[str]) -> dict[str, float]:
    """Wall seconds inside ggml_quantize_chunk calls per type, for one `exaone-gguf` run in a child."""
    _, _, _, out = run_rusage([sys.executable, "-c", KERNEL_TIMED, *cmd_args])
    return json.loads(out.strip().splitlines()[-1])


FLOAT_TYPES = ("f32", "f16", "bf16")


def tensor_digests(path: Path) -> dict[str, tuple[str, str]]:
    """tensor name -> (ggml type, SHA-256 of its data bytes), from our strict reader."""
    from exaone_gguf.gguf_io.reader import read_gguf

    with read_gguf(path) as f:
        return {t.name: (t.type_name, hashlib.sha256(f.tensor_bytes(t)).hexdigest()) for t in f.tensors}


# Tensors the converter computes rather than reads: llama.cpp's computes rope_freqs in torch float32, ours in
# float64 rounded once to float32, so a value or two may differ in the last bit. Reported, not counted.
COMPUTED = ("rope_freqs.weight",)


def same_tensors(ours_path: Path, theirs_path: Path) -> tuple[str | None, list[str]]:
    """(None when both files hold the same weight tensors: names, types, data bytes; else what differs first,
    notes on the computed tensors)."""
    ours, theirs = tensor_digests(ours_path), tensor_digests(theirs_path)
    notes = []
    for name in COMPUTED:
        if name in ours and name in theirs and ours.pop(name)[1] != theirs.pop(name)[1]:
            from exaone_gguf.gguf_io.reader import read_gguf

            with read_gguf(ours_path) as a, read_gguf(theirs_path) as b:
                x, y = a.tensor_f32(name), b.tensor_f32(name)
            rel = float(abs((x.astype("f8") - y) / y).max())
            notes.append(f"{name}: {int((x != y).sum())} of {x.size} values differ, at most {rel:.1e} relative")
    if set(ours) != set(theirs):
        return (
            f"tensor names differ: only ours {sorted(set(ours) - set(theirs))[:3]}, only theirs {sorted(set(theirs) - set(ours))[:3]}",
            notes,
        )
    for name in ours:
        if ours[name][0] != theirs[name][0]:
            return f"{name}: type {ours[name][0]} vs {theirs[name][0]}", notes
        if ours[name][1] != theirs[name][1]:
            return f"{name}: data bytes differ", notes
    return None, notes


def llama_route(ckpt: Path, types: list[str], threads: int, work: Path, ours: dict[str, Path]) -> dict:
    """llama.cpp's route to `types`: its converter to BF16 once, llama-quantize per quantized type from it.
    Returns timings {convert: (wall, rss, cpu), quantize: {t: (wall, rss, cpu)}} and, per type, same_tensors()
    of ours[t] against llama.cpp's file. Each output is compared, then deleted."""
    from llama_tools import source_dir, tools  # scripts/llama_tools.py, beside this file

    quantize = tools()["llama-quantize"]
    src = source_dir()
    work.mkdir(parents=True, exist_ok=True)
    bf16 = work / "llama-bf16.gguf"
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}  # its converter with its own gguf-py
    conv = run_rusage(
        [sys.executable, str(src / "convert_hf_to_gguf.py"), str(ckpt), "--outtype", "bf16", "--outfile", str(bf16)],
        env=env,
    )[:3]
    print(
        f"llama.cpp convert_hf_to_gguf bf16 {conv[0]:7.1f} s  CPU {conv[2]:7.1f} s  peak RSS {conv[1]:7.0f} MB",
        flush=True,
    )
    diffs: dict[str, tuple[str | None, list[str]]] = {}
    if "bf16" in ours:
        diffs["bf16"] = same_tensors(ours["bf16"], bf16)
    quant: dict[str, tuple[float, float, float]] = {}
    for t in types:
        if t in FLOAT_TYPES:
            continue
        out = work / f"llama-{t}.gguf"
        quant[t] = run_rusage([str(quantize), str(bf16), str(out), t.upper(), str(threads)])[:3]
        print(
            f"llama-quantize {t:<7} {quant[t][0]:7.1f} s  CPU {quant[t][2]:7.1f} s  peak RSS {quant[t][1]:7.0f} MB",
            flush=True,
        )
        if t in ours:
            diffs[t] = same_tensors(ours[t], out)
        out.unlink()
    bf16.unlink()
    return {"convert": conv, "quantize": quant, "diffs": diffs}


def inspect_facts_gguf_py(path: Path) -> tuple[float, dict]:
    wall, _, _, out = run_rusage([sys.executable, "-c", GGUF_PY, str(path)])
    facts = json.loads(out)
    facts["tensors"] = [(n, ty, tuple(sh), off) for n, ty, sh, off in facts["tensors"]]
    return wall, facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--types", default="bf16,q8_0,q6_k,q5_k_m,q4_k_m")
    ap.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: the cores this process may use"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (singles, publish); the fastest of each is kept")
    ap.add_argument("--floor", action="store_true", help="time the kernels of one more publish run (see above)")
    ap.add_argument(
        "--no-llama", action="store_true", help="skip llama.cpp's route (convert_hf_to_gguf + llama-quantize)"
    )
    args = ap.parse_args()
    types = args.types.split(",")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)  # a new --work-dir is fine
    work = Path(tempfile.mkdtemp(prefix="bench_publish_", dir=args.workdir))
    results: dict = {"threads": args.threads, "types": types, "repeat": args.repeat}
    try:
        copy_s = copy_baseline(args.ckpt, work / "copy")
        shutil.rmtree(work / "copy")
        results["copy_s"] = round(copy_s, 2)
        print(f"baseline: copy of the source bytes {copy_s:.1f} s", flush=True)

        singles: dict[str, tuple[float, float, float]] = {}
        hashes: dict[str, str] = {}
        best_pub: tuple[float, float, float] | None = None
        best_llama: dict[str, tuple[float, float, float]] = {}  # "convert" and each quantized type, fastest kept
        llama_diffs: dict[str, tuple[str | None, list[str]]] = {}
        for rnd in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"round {rnd} of {args.repeat}", flush=True)
            for t in types:
                out = work / f"single-{t}.gguf"
                wall, rss, cpu, _ = run_rusage(
                    [*CLI, "convert", str(args.ckpt), "-o", str(out), "--outtype", t, "--threads", str(args.threads)]
                )
                digest = sha256(out)
                if hashes.setdefault(t, digest) != digest:
                    sys.exit(f"single {t}: round {rnd} wrote other bytes than round 1")
                out.unlink()
                print(f"single {t:<7} {wall:7.1f} s  CPU {cpu:7.1f} s  peak RSS {rss:7.0f} MB", flush=True)
                old = singles.get(t, (wall, rss, cpu))
                singles[t] = (min(wall, old[0]), max(rss, old[1]), min(cpu, old[2]))
            pub = work / "pub"
            shutil.rmtree(pub, ignore_errors=True)
            wall, rss, cpu, out = run_rusage(
                [
                    *CLI,
                    "convert",
                    str(args.ckpt),
                    "-o",
                    f"{pub}/",
                    "--outtype",
                    ",".join(types),
                    "--threads",
                    str(args.threads),
                    "--json",
                ]
            )
            print(f"publish {len(types)} types {wall:7.1f} s  CPU {cpu:7.1f} s  peak RSS {rss:7.0f} MB", flush=True)
            best_pub = (
                (wall, rss, cpu)
                if best_pub is None
                else (min(wall, best_pub[0]), max(rss, best_pub[1]), min(cpu, best_pub[2]))
            )
            if not args.no_llama:
                last = rnd == args.repeat  # compare the files once, in the last round
                ours = {
                    v["outtype"].lower(): Path(v["files"][0])
                    for v in json.loads(out.strip().splitlines()[-1])["variants"]
                }
                route = llama_route(args.ckpt, types, args.threads, work / "llama", ours if last else {})
                for key, m in [("convert", route["convert"]), *route["quantize"].items()]:
                    old = best_llama.get(key, m)
                    best_llama[key] = (min(m[0], old[0]), max(m[1], old[1]), min(m[2], old[2]))
                llama_diffs.update(route["diffs"])
        total_single = sum(w for w, _, _ in singles.values())
        total_single_cpu = sum(c for _, _, c in singles.values())
        published = json.loads(out.strip().splitlines()[-1])
        wall, rss, cpu = best_pub
        same = {}
        for v in published["variants"]:
            t = v["outtype"].lower()
            same[t] = sha256(Path(v["files"][0])) == hashes[t]
        ratio = wall / total_single
        if args.repeat > 1:
            print(f"fastest of {args.repeat}: publish {wall:.1f} s, CPU {cpu:.1f} s", flush=True)
        print(
            f"sum of single runs {total_single:.1f} s wall, {total_single_cpu:.1f} s CPU; publish / sum = "
            f"{ratio:.3f} wall, {cpu / total_single_cpu:.3f} CPU"
        )
        print(f"byte-identical to the single runs: {same}")
        if best_llama:
            llama_s = sum(w for w, _, _ in best_llama.values())
            llama_cpu = sum(c for _, _, c in best_llama.values())
            n_q = len(best_llama) - 1
            print(
                f"llama.cpp route (convert_hf_to_gguf bf16 + {n_q} x llama-quantize, {args.threads} threads) {llama_s:.1f} s wall, "
                f"{llama_cpu:.1f} s CPU; publish / llama.cpp route = {wall / llama_s:.3f} wall, {cpu / llama_cpu:.3f} CPU "
                f"(target <= 0.6)"
            )
            identical = {t: d is None for t, (d, _) in llama_diffs.items()}
            print(f"same weight tensors (names, types, data bytes) as llama.cpp's files: {identical}")
            for t, (d, notes) in llama_diffs.items():
                for line in ([d] if d else []) + notes:
                    print(f"  {t}: {line}")
            results.update(
                llama={
                    k: {"s": round(w, 2), "cpu_s": round(c, 2), "rss_mb": round(r)}
                    for k, (w, r, c) in best_llama.items()
                },
                llama_route_s=round(llama_s, 2),
                llama_route_cpu_s=round(llama_cpu, 2),
                ratio_llama=round(wall / llama_s, 3),
                ratio_llama_cpu=round(cpu / llama_cpu, 3),
                identical_to_llama=identical,
                llama_notes={t: n for t, (_, n) in llama_diffs.items() if n},
            )
        results.update(
            single={
                t: {"s": round(w, 2), "cpu_s": round(c, 2), "rss_mb": round(r)} for t, (w, r, c) in singles.items()
            },
            sum_single_s=round(total_single, 2),
            sum_single_cpu_s=round(total_single_cpu, 2),
            publish_s=round(wall, 2),
            publish_cpu_s=round(cpu, 2),
            publish_rss_mb=round(rss),
            ratio=round(ratio, 3),
            ratio_cpu=round(cpu / total_single_cpu, 3),
            identical=same,
        )

        if args.floor:
            shutil.rmtree(pub)
            spent = kernel_seconds(
                [
                    "convert",
                    str(args.ckpt),
                    "-o",
                    f"{pub}/",
                    "--outtype",
                    ",".join(types),
                    "--threads",
                    str(args.threads),
                    "--json",
                ]
            )
            k = sum(spent.values())
            print(
                f"kernel time of the publish run {k:.1f} s ({', '.join(f'{t} {v:.1f}' for t, v in spent.items())}): "
                f"{k / total_single:.3f} of the sum of single runs, the floor for byte-identical output"
            )
            results.update(kernel_s={t: round(v, 2) for t, v in spent.items()}, floor_ratio=round(k / total_single, 3))

        q4 = next((Path(v["files"][0]) for v in published["variants"] if v["outtype"] == "Q4_K_M"), None)
        if q4 is not None:
            ours_s, ours = inspect_facts_ours(q4)
            theirs_s, theirs = inspect_facts_gguf_py(q4)
            agree = ours == theirs
            print(
                f"inspect {q4.name}: exaone-gguf inspect --json {ours_s:.2f} s, gguf-py GGUFReader {theirs_s:.2f} s "
                f"(whole processes, imports included); same facts: {agree}"
            )
            if not agree:
                for k in ours:
                    if ours[k] != theirs[k]:
                        print(f"  differs: {k}")
            results.update(inspect_s=round(ours_s, 3), gguf_py_s=round(theirs_s, 3), inspect_same_facts=agree)
        print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
