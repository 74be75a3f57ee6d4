#!/usr/bin/env python
"""Measure the row-level tensor check's figures on honest and damaged files of one checkpoint.

For each file, every tensor's rows against their candidates (validate/tensor_check.py): how many rows are
identical to a fresh quantization (directly or through an F16/BF16 rounding), and for the rows identical to
none the distribution of e_file / e_ref (the row bound's statistic, ROW_MARGIN sits above its maximum on honest
files) and each tensor's error ratio sqrt(sum err_file^2 / sum err_fresh^2) (RATIO_LIMIT sits above it).

    python scripts/row_check_margins.py SRC_DIR FILE.gguf [FILE.gguf ...] [--imatrix FILE] [--json OUT]

Files are made elsewhere (exaone-gguf convert / quantize, llama.cpp's tools, tests/gguf_edit.py): this script
only measures. --imatrix is handed to the check (leave it out to measure imatrix files judged without it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from exaone_gguf.families import family_for, load_checkpoint, writes_as
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.imatrix import load_imatrix
from exaone_gguf.validate.tensor_check import ROUTES, THREADS, row_figures


def measure(src: Path, gguf: Path, imatrix: Path | None) -> dict:
    ckpt = load_checkpoint(src)
    weights = load_imatrix(imatrix) if imatrix else None
    t0 = time.perf_counter()
    excess, ratios, by_type = [], {}, {}
    counts = np.zeros(len(ROUTES), np.int64)
    n_rows = 0
    with read_gguf(gguf) as f, ThreadPoolExecutor(THREADS) as pool:
        arch = f.get("general.architecture")
        fam = family_for(ckpt.spec, arch if writes_as(ckpt.spec, arch) else None)
        for m in fam.tensor_map(ckpt.spec):
            fig = row_figures(f, ckpt, m, weights, pool)
            counts += fig.counts
            n_rows += fig.n_rows
            if not fig.rows.size:
                continue
            ss, err_file, err_fresh, err_ref, _, _ = fig.stats
            keep = err_ref > 0
            excess.append(np.sqrt(err_file[keep] / err_ref[keep]))
            e_ref = np.sqrt(err_ref[keep] / ss[keep])
            t = by_type.setdefault(fig.qtype.name, [0.0, 0.0, 0.0])  # max excess, its row's e_ref, median e_ref
            if excess[-1].size and excess[-1].max() > t[0]:
                t[:2] = float(excess[-1].max()), float(e_ref[np.argmax(excess[-1])])
            t[2] = max(t[2], float(np.median(e_ref)))
            ratios[f"{m.gguf_name} {fig.qtype.name}"] = math.sqrt(err_file.sum() / max(err_fresh.sum(), 1e-300))
    seconds = time.perf_counter() - t0
    ex = np.concatenate(excess) if excess else np.zeros(0)
    out = {
        "file": str(gguf),
        "seconds": round(seconds, 2),
        "rows": n_rows,
        "identical": {r: int(c) for r, c in zip(ROUTES, counts)},
        "differ": int(ex.size),
    }
    if ex.size:
        q = [50, 90, 99, 99.9, 100]
        out["row e_file/e_ref percentiles"] = {f"p{p}": round(float(np.percentile(ex, p)), 4) for p in q}
        out["row e_file/e_ref max by type (its e_ref, largest median e_ref)"] = {
            k: [round(x, 4) for x in v] for k, v in by_type.items()
        }
        r = sorted(ratios.items(), key=lambda kv: kv[1])
        out["tensor error ratio"] = {"min": [r[0][0], round(r[0][1], 4)], "max": [r[-1][0], round(r[-1][1], 4)]}
        out["tensor error ratio by type"] = {
            t: [round(min(v), 4), round(max(v), 4)]
            for t in sorted({k.split()[1] for k in ratios})
            for v in [[x for k, x in ratios.items() if k.endswith(" " + t)]]
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--imatrix", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for g in args.files:
        r = measure(args.src, g, args.imatrix)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
