"""Tensors: every row of every GGUF tensor against the same row of its source tensor.

Our quantization kernels are llama.cpp's own (ggml_quantize_chunk), so quantizing a source row (mapped through
the family's tensor table, transforms applied) with the type the file gives its tensor, and the imatrix the file
was made with, reproduces an honest row byte for byte. Each row's bytes are compared with three candidates:

    quant(src)          our convert, llama-quantize of an F32 or same-dtype file
    quant(f16(src))     llama.cpp's route through an F16 file
    quant(bf16(src))    a route through a BF16 file (an F32 or F16 source)

(a rounding that leaves the source unchanged, BF16 of a BF16 source, adds no candidate). A row equal to one is
identical to a fresh quantization of the source (through that rounding). A row equal to none (a file made with
an imatrix we were not given, or by other kernels) is judged by its relative error e = |deq - src| / |src|:

    row:      e_file <= min(ROW_MARGIN * e_ref + ROW_FLOOR, ROW_CAP)    e_ref: the largest of the candidates' errors
    tensor:   sqrt(sum err_file^2 / sum err_fresh^2) <= RATIO_LIMIT     over the rows equal to no candidate
              |g_file - g_fresh| <= gain_limit                        g = <deq, src> / <src, src> over those rows

A swapped, random or zeroed row has e near 1 or 1.4, outside its row bound at any bit width; a fine-tuned
sibling's tensors (the source plus a little noise per row, quantized honestly) may stay inside each row's bound
at 4 bits but raise the tensor's error over a fresh quantization's: every such row differs, and the tensor ratio
sees the noise (in quadrature where it is not snapped back to the grid). A tensor scaled by 1.02 moves the gain.
The bounds (below) were measured with scripts/row_check_margins.py on honest and damaged files of the trained
network; rows of a file made with an imatrix that was not given are held to the looser _NO_IMATRIX bounds (an
imatrix quantization trades unweighted error for weighted), and the report says so.

Every row is compared; chunks of rows of a tensor go to a thread pool (ctypes and numpy release the GIL), each
chunk quantized on one core, so the check costs about one quantization of the model and memory stays at a few
chunks per core. Float tensors stored as they are in the source (BF16 from BF16 ...) are compared as raw
bytes, which is the same verdict as converting them (NaN payloads aside: those take the converting path). A
layer of a quantized source (GPTQ, AWQ, compressed-tensors) whose codes the file's type holds exactly is identical
when the file keeps those codes (what convert writes); otherwise it is judged, like any tensor, against the
source's exact dequantization.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.convert.pipeline import convert_rows_at
from exaone_gguf.elements import bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits
from exaone_gguf.errors import InputError
from exaone_gguf.families import TensorMapping, family_for, writes_as
from exaone_gguf.gguf_io import GGUFFile
from exaone_gguf.model.weights import dequantize
from exaone_gguf.quantize.imatrix import weights_for
from exaone_gguf.validate.results import CheckResult

CHUNK_VALUES = 1 << 20  # source values per chunk (4 MB of float32); a tensor is cut into at least one per core
# safetensors dtype of a float GGUF type whose conversion from that dtype keeps the bits
SAME_BITS = {T.F32: "F32", T.F16: "F16", T.BF16: "BF16"}
FLOATS = (T.F32, T.F16, T.BF16)
ROUTES = ("source", "F16", "BF16")  # the candidates' roundings of the source rows, in the order they are tried
# Bounds (scripts/row_check_margins.py measures them). Honest files of our convert and llama.cpp's tools: every
# row identical to a candidate. SmolLM2-135M's Q4_K_M requantized from its Q8_0 (an honest but lossy route): rows
# up to 1.38x, tensors 0.999-1.008x (Q4_K), 1.05x (Q6_K); its fine-tuned sibling at Q4_K_M: Q4_K tensors
# 1.0145-1.025x, the others 1.04x and more. Imatrix files judged without their imatrix (Q4_K_M, IQ4_XS, Q2_K):
# rows up to 3.25x (a Q6_K row; Q4_K 1.21x, Q3_K 1.35x, Q4_0/Q5_0 1.73x), tensors up to 1.29x.
ROW_MARGIN = 1.5
ROW_MARGIN_NO_IMATRIX = 4.0
ROW_FLOOR = 1e-6
ROW_CAP = 0.9  # no row bound above this relative error: a zeroed row has 1.0, a random or swapped one ~1.4
RATIO_LIMIT = 1.01
RATIO_LIMIT_NO_IMATRIX = 1.5
GAIN_SIGMAS = 6.0
GAIN_FLOOR = 2e-3
SHOWN_ROWS = 5  # rows named per tensor
THREADS = max(1, os.cpu_count() or 1)


def _round16(x: np.ndarray, route: str) -> np.ndarray:
    if route == "F16":
        return f16_bits_to_f32(f32_to_f16_bits(x)).reshape(x.shape)
    return bf16_bits_to_f32(f32_to_bf16_bits(x)).reshape(x.shape)


@dataclass
class TensorVerdict:
    name: str
    type: str
    rows: int
    same: int  # rows byte-identical to a fresh quantization of the source row
    via: dict[str, int] = field(default_factory=dict)  # rows identical to one through an F16 / BF16 rounding
    differ: int = 0  # rows identical to no candidate
    outside: int = 0  # of those, rows outside their row bound
    worst_rows: list = field(default_factory=list)  # [(row, e_file, e_bound)] of the rows outside, first few
    row_excess: float = math.nan  # max over differing rows of e_file / (ROW_MARGIN * e_ref + ROW_FLOOR)
    error_ratio: float = math.nan  # sqrt(sum err_file^2 / sum err_fresh^2) over the differing rows
    ratio_limit: float = math.nan
    gain: float = math.nan  # over the differing rows
    fresh_gain: float = math.nan
    gain_limit: float = math.nan
    problem: str = ""

    @property
    def identical(self) -> bool:
        return self.same == self.rows

    @property
    def ok(self) -> bool:
        return not self.problem

    def to_dict(self) -> dict:
        """JSON-ready; figures that were not computed (no differing row) are left out."""
        d = {
            k: v
            for k, v in self.__dict__.items()
            if v not in ("", [], {}) and not (isinstance(v, float) and math.isnan(v))
        }
        d = {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}
        if "worst_rows" in d:
            d["worst_rows"] = [[r, float(f"{e:.4g}"), float(f"{b:.4g}")] for r, e, b in self.worst_rows]
        return {**d, "identical": self.identical, "ok": self.ok}


def _nan_free(raw: np.ndarray, qtype: T) -> bool:
    """No NaN among raw BF16 / F16 bit patterns (F32 keeps every bit through conversion, NaN or not)."""
    if qtype == T.F32:
        return True
    u = raw.view("<u2")
    return not bool(np.any((u & 0x7FFF) > (0x7F80 if qtype == T.BF16 else 0x7C00)))


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row <a, b> (float32 sums over one row, float64 out)."""
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def _chunk(src: np.ndarray, got: np.ndarray, start: int, n_rows: int, qtype: T, w) -> tuple:
    """Rows [start, start + len(src)) (`got`: the file's bytes [rows, row_bytes]) -> RowFigures' counts, rows,
    stats for these rows."""

    def quant(x):
        return convert_rows_at(x, start, n_rows, qtype, 1, w).reshape(len(x), -1).view(np.uint8)

    counts = np.zeros(len(ROUTES), dtype=np.int64)
    left = np.arange(len(src))  # rows equal to no candidate so far
    cands = []  # each route's quantization, for the error figures
    for i, route in enumerate(ROUTES):
        x = src if route == "source" else _round16(src, route)
        if route != "source" and np.array_equal(x, src):
            continue  # this rounding is the identity here: the same candidate again
        q = quant(x)
        match = np.all(q[left] == got[left], axis=1)
        counts[i] = int(match.sum())
        cands.append(q)
        left = left[~match]
        if not left.size:
            break
    stats = np.zeros((6, left.size))
    if left.size:
        s = src[left]
        deq = dequantize(np.ascontiguousarray(got[left]), qtype, left.size, src.shape[1])
        fresh = [dequantize(np.ascontiguousarray(q[left]), qtype, left.size, src.shape[1]) for q in cands]
        errs = [_row_dot(d - s, d - s) for d in fresh]  # cands[0] is quant(src), the fresh quantization
        diff = deq - s
        stats[:] = (
            _row_dot(s, s),
            _row_dot(diff, diff),
            errs[0],
            np.max(errs, axis=0),
            _row_dot(deq, s),
            _row_dot(fresh[0], s),
        )
    return counts, left + start, stats


def _bounded_map(pool: ThreadPoolExecutor, fn, items, ahead: int):
    """pool.map with at most `ahead` items in flight (memory stays at that many chunks), results in order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, *item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass
class RowFigures:
    """Every row of one tensor against its candidates: route counts, and the figures of the rows equal to none."""

    qtype: T
    n_rows: int
    n_cols: int
    counts: np.ndarray  # rows identical to a candidate, per route
    rows: np.ndarray  # indexes of the rows equal to no candidate
    stats: np.ndarray  # [6, len(rows)]: ss, err_file, err_fresh, err_ref, dot_file, dot_fresh (squared norms)


def row_figures(
    f: GGUFFile, ckpt: Checkpoint, m: TensorMapping, imatrix: dict | None, pool: ThreadPoolExecutor
) -> RowFigures:
    info = f.tensor(m.gguf_name)
    qtype = info.tensor_type
    n_cols = info.shape[0]
    n_rows = info.n_elements // n_cols
    handle = m.open(ckpt.tensors)
    w = weights_for(imatrix, m.gguf_name, info.shape) if imatrix is not None and qtype not in FLOATS else None
    raw_file = f.tensor_bytes(info)
    row_bytes = raw_file.size // n_rows
    group = 1 if m.transform is None else m.row_group  # the transform sees whole row groups (one attention head)
    workers = getattr(pool, "_max_workers", 1)
    step = min(max(1, CHUNK_VALUES // n_cols), -(-n_rows // workers))  # at least one chunk per core
    step = max(group, -(-step // group) * group)
    ranges = [(start, min(n_rows, start + step)) for start in range(0, n_rows, step)]
    same = RowFigures(qtype, n_rows, n_cols, np.array([n_rows, 0, 0]), np.zeros(0, np.int64), np.zeros((6, 0)))

    def done(start: int, stop: int) -> None:  # the file's pages of these rows leave this process
        f.release(info, start * row_bytes, stop * row_bytes)

    if (
        SAME_BITS.get(qtype) == getattr(handle, "dtype", None)
        and m.transform is None
        and hasattr(handle, "raw")
        and _same_raw_bytes(handle, raw_file, ranges, row_bytes, qtype, done)
    ):
        return same
    if qtype not in FLOATS and _source_codes_match(handle, qtype, m, ranges, raw_file, row_bytes, done):
        return same

    def run(start: int, stop: int) -> tuple:
        if len(m.hf_shape) > 1:
            src = handle.to_f32(start, stop).reshape(stop - start, n_cols)
        else:
            src = handle.to_f32().reshape(1, -1)
        handle.release(start, stop)
        src = np.ascontiguousarray(src if m.transform is None else m.transform(src), dtype=np.float32)
        got = raw_file[start * row_bytes : stop * row_bytes].reshape(stop - start, row_bytes)
        out = _chunk(src, got, start, n_rows, qtype, w)
        done(start, stop)
        return out

    parts = list(_bounded_map(pool, run, ranges, 2 * workers))
    counts, rows, stats = zip(*parts)
    return RowFigures(qtype, n_rows, n_cols, np.sum(counts, axis=0), np.concatenate(rows), np.concatenate(stats, 1))


def compare_tensor(
    f: GGUFFile,
    ckpt: Checkpoint,
    m: TensorMapping,
    imatrix: dict | None,
    pool: ThreadPoolExecutor,
    exact: bool = True,
) -> TensorVerdict:
    """Every row of one tensor (module docstring); `exact`: the file's imatrix, if it had one, is `imatrix`."""
    fig = row_figures(f, ckpt, m, imatrix, pool)
    qtype, n_rows, n_cols, rows = fig.qtype, fig.n_rows, fig.n_cols, fig.rows
    verdict = TensorVerdict(m.gguf_name, qtype.name, n_rows, int(fig.counts[0]))
    verdict.via = {ROUTES[i]: int(c) for i, c in enumerate(fig.counts) if i and c}
    if not rows.size:
        return verdict
    ss, err_file, err_fresh, err_ref, dot_file, dot_fresh = fig.stats
    margin, verdict.ratio_limit = (
        (ROW_MARGIN, RATIO_LIMIT) if exact else (ROW_MARGIN_NO_IMATRIX, RATIO_LIMIT_NO_IMATRIX)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.sqrt(ss)
        e_file = np.where(norm > 0, np.sqrt(err_file) / norm, np.where(err_file > 0, np.inf, 0.0))
        e_bound = np.where(norm > 0, np.minimum(margin * np.sqrt(err_ref) / norm + ROW_FLOOR, ROW_CAP), 0.0)
        excess = np.where(e_bound > 0, e_file / e_bound, np.where(e_file > 0, np.inf, 0.0))
    out = np.flatnonzero(~(e_file <= e_bound))  # NaN is outside
    verdict.differ, verdict.outside = int(rows.size), int(out.size)
    verdict.row_excess = float(np.max(excess))
    worst = out[np.argsort(-excess[out], kind="stable")][:SHOWN_ROWS]
    verdict.worst_rows = [(int(rows[i]), float(e_file[i]), float(e_bound[i])) for i in worst]
    sum_ss = float(ss.sum())
    tot_file, tot_fresh = float(err_file.sum()), float(err_fresh.sum())
    verdict.error_ratio = math.sqrt(tot_file / tot_fresh) if tot_fresh > 0 else (1.0 if tot_file == 0 else math.inf)
    if sum_ss > 0:
        verdict.gain, verdict.fresh_gain = float(dot_file.sum() / sum_ss), float(dot_fresh.sum() / sum_ss)
        sd = math.sqrt(2 * float(np.sum(err_fresh * ss)) / n_cols) / sum_ss  # rounding noise projected on src
        verdict.gain_limit = GAIN_SIGMAS * sd + GAIN_FLOOR
    problems = []
    if out.size:
        shown = ", ".join(f"{rows[i]} (error {e_file[i]:.3g}, bound {e_bound[i]:.3g})" for i in worst)
        more = f", ... {out.size - len(worst)} more" if out.size > len(worst) else ""
        problems.append(f"{out.size} of {n_rows} rows outside their {qtype.name} error bound: rows {shown}{more}")
    if not verdict.error_ratio <= verdict.ratio_limit:
        how = (
            f"{verdict.error_ratio:.4g}x a fresh {qtype.name} quantization's"
            if math.isfinite(verdict.error_ratio)
            else f"where a fresh {qtype.name} conversion is exact"
        )
        problems.append(
            f"{rows.size} rows identical to no fresh quantization, their error {how} (limit {verdict.ratio_limit:g}x)"
        )
    if sum_ss > 0 and not abs(verdict.gain - verdict.fresh_gain) <= verdict.gain_limit:
        problems.append(
            f"gain {verdict.gain:.4f} where a fresh {qtype.name} quantization has {verdict.fresh_gain:.4f}"
            f" (limit ±{verdict.gain_limit:.2g})"
        )
    verdict.problem = "; ".join(problems)
    return verdict


def _source_codes_match(handle, qtype: T, m: TensorMapping, ranges, raw_file: np.ndarray, row_bytes: int, done) -> bool:
    """A quantized source (GPTQ, AWQ, compressed-tensors) whose codes `qtype` holds exactly: the file's rows equal
    those codes, as convert writes them. False: judge the file against the exact dequantization as usual."""
    why_not = getattr(handle, "why_not", None)
    if why_not is None or why_not(qtype) is not None:
        return False
    for start, stop in ranges:
        rows = handle.encode_rows(qtype, start, stop, m.transform)
        same = rows is not None and np.array_equal(rows.reshape(-1), raw_file[start * row_bytes : stop * row_bytes])
        handle.release(start, stop)
        done(start, stop)
        if not same:
            return False
    return True


def _same_raw_bytes(handle, raw_file: np.ndarray, ranges, row_bytes: int, qtype: T, done) -> bool:
    """A float tensor stored in the source's own dtype: equal raw bytes (and no NaN, whose payload a
    conversion may change) are exactly "identical to a fresh conversion". False: take the converting path."""
    for start, stop in ranges:
        src = np.ascontiguousarray(handle.raw(start, stop)).view(np.uint8).reshape(-1)
        got = raw_file[start * row_bytes : stop * row_bytes]
        same = np.array_equal(src, got) and _nan_free(src, qtype)
        handle.release(start, stop)
        done(start, stop)
        if not same:
            return False
    return True


def check_tensors(
    f: GGUFFile, ckpt: Checkpoint, imatrix: dict[str, np.ndarray] | None = None, threads: int | None = None
) -> CheckResult:
    """One result for all tensors; the per-tensor verdicts are in its data."""

    name = "tensors: match source"
    start = time.perf_counter()
    arch = f.get("general.architecture")
    spec = ckpt.spec
    try:
        fam = family_for(spec, arch if writes_as(spec, arch) else None)
    except InputError as e:
        return CheckResult(name, "fail", str(e))
    have = {t.name: t for t in f.tensors}
    made_with = f.get("quantize.imatrix.file")
    exact = imatrix is not None or made_with is None
    verdicts, missing = [], []
    with ThreadPoolExecutor(max_workers=threads or THREADS) as pool:
        for m in fam.tensor_map(spec):
            t = have.get(m.gguf_name)
            if t is None or tuple(t.shape) != tuple(reversed(m.hf_shape)):
                missing.append(m.gguf_name)  # named by "metadata: tensors"
                continue
            verdicts.append(compare_tensor(f, ckpt, m, imatrix, pool, exact))
    seconds = round(time.perf_counter() - start, 2)  # about one quantization of the file's types: its cost
    data = {"tensors": [v.to_dict() for v in verdicts], "not_compared": missing, "seconds": seconds}
    status = "fail" if missing or any(not v.ok for v in verdicts) else "pass"
    return CheckResult(name, status, _summary(verdicts, missing, made_with, exact), data)


def _summary(verdicts: list[TensorVerdict], missing: list[str], made_with, exact: bool) -> str:
    """What was compared and what it showed, in one sentence per kind of tensor."""
    n = len(verdicts)
    n_rows = sum(v.rows for v in verdicts)
    text = f"every row compared ({n_rows} rows): {sum(v.identical for v in verdicts)}/{n} identical to a fresh quantization of the source"
    via = {r: [v for v in verdicts if v.via.get(r)] for r in ROUTES[1:]}
    for route, vs in via.items():
        if vs:
            rows = sum(v.via[route] for v in vs)
            text += (
                f"; {rows} rows of {len(vs)} tensors identical to a fresh quantization of the source rounded to {route}"
            )
    differ = [v for v in verdicts if v.differ and v.ok]
    if differ:
        worst = max(differ, key=lambda v: v.error_ratio)
        text += (
            f"; {sum(v.differ for v in differ)} rows of {len(differ)} tensors identical to no fresh quantization, each"
            f" within its row bound (worst {max(v.row_excess for v in differ):.3g} of it), error"
            f" {worst.error_ratio:.4g}x a fresh quantization's at most ({worst.name}; limit {worst.ratio_limit:g}x)"
        )
    if not exact:
        text += (
            f"; made with imatrix {made_with!r}, not given: rows that differ are held to the looser bounds an unknown"
            " imatrix needs (a fine-tuned sibling's weights may pass them); pass --imatrix to compare its rows byte"
            " for byte"
        )
    if missing:
        text += f"; {len(missing)} not compared (missing or misshapen, see metadata: tensors)"
    bad = [v for v in verdicts if not v.ok]
    if bad:
        shown = "; ".join(f"{v.name}: {v.problem}" for v in bad[:3]) + (
            f"; ... {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        return f"{len(bad)} tensor(s) differ from the source: {shown} ({text})"
    return text
