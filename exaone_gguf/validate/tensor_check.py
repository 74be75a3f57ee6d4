"""Tensors: every GGUF tensor against its source tensor, predicted by a fresh quantization.

Our quantization kernels are llama.cpp's own (ggml_quantize_chunk), so quantizing the source tensor (mapped
through the family's tensor table, transforms applied) with the type the file gives that tensor, and the
imatrix the file was made with, reproduces an honest file byte for byte, at every bit width: a tensor is
"identical to a fresh quantization of the source".

When the bytes differ (a file made through an F16 intermediate, or with an imatrix we were not given), the
tensor is judged against the band its type gives on that tensor: with e = |deq - src| / |src| and the gain
g = <deq, src> / <src, src> (how large the tensor is, projected on the source),

    e_file <= BAND_MARGIN * e_fresh + BAND_FLOOR     and     |g_file - g_fresh| <= gain_limit

gain_limit = GAIN_SIGMAS * e_fresh / sqrt(n) + GAIN_FLOOR: rounding moves the gain by about e / sqrt(n)
(n values). A swapped or transposed tensor has e near 1.4 at any width; a tensor scaled by 1.02 moves the gain
by 0.02 while its error can hide inside a 2-bit band. Rows are read in chunks, and the file's and the
source's mapped pages are released behind them: memory stays bounded.

Large block-quantized tensors (SAMPLE_MIN_VALUES values or more) are checked exactly on a sample, unless
`full`: one row block in SAMPLE_EVERY (and the last) is re-quantized and must equal the file byte for byte,
and every row of the tensor is dequantized and compared with the source: each row's relative error within
BAND_MARGIN times the worst sampled row's, and the unsampled rows' error and gain within the band the sample
gives (the sampled rows are a fresh quantization, so they measure the type's own error on this tensor).
Anything else falls back to the exhaustive check, whose verdict is then the one reported, so a sample never
fails a file the exhaustive check passes. Every damage that touches all rows (two tensors swapped, one scaled
or transposed) differs in the sampled bytes. What a sample can miss: a change confined to unsampled rows that
stays within rounding size, e.g. a few rows scaled by 1.02 or quantized with other (valid) choices; `--full-tensors`
compares every byte. A layer of a quantized source (GPTQ, AWQ, compressed-tensors) whose codes the file's type
holds exactly is identical when the file keeps those codes (what convert writes); otherwise it is judged, like any
tensor, against the source's exact dequantization. Float tensors stored as they are in the source (BF16 from BF16, F16 from F16, F32 from F32)
are compared as raw bytes, which is the same verdict as converting them: the conversion is the identity
there, NaN payloads aside (those take the converting path).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.convert.pipeline import convert_rows_at
from exaone_gguf.errors import InputError
from exaone_gguf.families import TensorMapping, family_for, writes_as
from exaone_gguf.gguf_io import GGUFFile
from exaone_gguf.quantize.imatrix import weights_for
from exaone_gguf.quantize.kernels import quantize
from exaone_gguf.validate.reference.weights import dequantize
from exaone_gguf.validate.results import CheckResult

CHUNK_VALUES = 1 << 22  # source values per chunk (16 MB of float32)
SAMPLE_MIN_VALUES = 1 << 21  # block-quantized tensors this large are re-quantized on a sample of their rows
SAMPLE_EVERY = 8  # one row block in eight (and the last) re-quantized
SAMPLE_BLOCK_ROWS = 32
# safetensors dtype of a float GGUF type whose conversion from that dtype keeps the bits
SAME_BITS = {T.F32: "F32", T.F16: "F16", T.BF16: "BF16"}
BAND_MARGIN = 1.5
BAND_FLOOR = 1e-6
GAIN_SIGMAS = 6.0
GAIN_FLOOR = 2e-3
FLOATS = (T.F32, T.F16, T.BF16)
THREADS = max(1, os.cpu_count() or 1)


@dataclass
class TensorVerdict:
    name: str
    type: str
    identical: bool
    ok: bool
    rel_error: float  # |deq(file) - src| / |src|
    fresh_error: float  # |deq(fresh) - src| / |src|
    band: float
    gain: float
    fresh_gain: float
    gain_limit: float
    problem: str = ""
    sampled_rows: int = 0  # rows re-quantized when only a sample was (0: every row)

    def to_dict(self) -> dict:
        """JSON-ready; an identical tensor has no error figures (none were computed)."""
        d = {
            k: v
            for k, v in self.__dict__.items()
            if (k not in ("problem", "sampled_rows") or v) and not (isinstance(v, float) and math.isnan(v))
        }
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}


def _nan_free(raw: np.ndarray, qtype: T) -> bool:
    """No NaN among raw BF16 / F16 bit patterns (F32 keeps every bit through conversion, NaN or not)."""
    if qtype == T.F32:
        return True
    u = raw.view("<u2")
    return not bool(np.any((u & 0x7FFF) > (0x7F80 if qtype == T.BF16 else 0x7C00)))


def _row_norms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row <a, b> (float32 sums over one row, float64 out)."""
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def compare_tensor(
    f: GGUFFile, ckpt: Checkpoint, m: TensorMapping, imatrix: dict | None, full: bool = False
) -> TensorVerdict:
    info = f.tensor(m.gguf_name)
    qtype = info.tensor_type
    n_cols = info.shape[0]
    n_rows = info.n_elements // n_cols
    handle = m.open(ckpt.tensors)
    w = weights_for(imatrix, m.gguf_name, info.shape) if imatrix is not None and qtype not in FLOATS else None
    raw_file = f.tensor_bytes(info)
    row_bytes = raw_file.size // n_rows
    step = max(1, CHUNK_VALUES // n_cols)
    group = 1 if m.transform is None else m.row_group  # the transform sees whole row groups (one attention head)
    step = max(group, step // group * group)
    ranges = [(start, min(n_rows, start + step)) for start in range(0, n_rows, step)]

    def source(start: int, stop: int) -> np.ndarray:
        if len(m.hf_shape) > 1:
            src = handle.to_f32(start, stop).reshape(stop - start, n_cols)
        else:
            src = handle.to_f32().reshape(1, -1)
        handle.release(start, stop)
        return src if m.transform is None else m.transform(src)

    def done(start: int, stop: int) -> None:  # the file's pages of these rows leave this process
        f.release(info, start * row_bytes, stop * row_bytes)

    def chunks():
        for start, stop in ranges:
            src = source(start, stop)
            fresh = _fresh(src, start, n_rows, qtype, w)
            yield start, stop, src, fresh, raw_file[start * row_bytes : stop * row_bytes]
            done(start, stop)

    identical = TensorVerdict(m.gguf_name, qtype.name, True, True, *([math.nan] * 6))
    if (
        SAME_BITS.get(qtype) == getattr(handle, "dtype", None)
        and m.transform is None
        and hasattr(handle, "raw")
        and _same_raw_bytes(handle, raw_file, ranges, row_bytes, qtype, done)
    ):
        return identical
    if qtype not in FLOATS and _source_codes_match(handle, qtype, m, ranges, raw_file, row_bytes, done):
        return identical
    if not full and qtype not in FLOATS and info.n_elements >= SAMPLE_MIN_VALUES:
        sampled = _sampled_verdict(m, qtype, w, n_rows, n_cols, group, raw_file, row_bytes, source, done)
        if sampled is not None:
            return sampled
    # pass 1: bytes only; an honest file ends here
    if all(np.array_equal(fresh, got) for _, _, _, fresh, got in chunks()):
        return identical
    # pass 2: errors and gains against the band
    ss_src = ss_file = ss_fresh = dot_file = dot_fresh = 0.0
    for start, stop, src, fresh, got in chunks():
        deq = dequantize(got, qtype, stop - start, n_cols).astype(np.float64)
        deq_fresh = dequantize(fresh, qtype, stop - start, n_cols).astype(np.float64)
        s = src.astype(np.float64)
        ss_src += float(np.sum(s * s))
        ss_file += float(np.sum((deq - s) ** 2))
        ss_fresh += float(np.sum((deq_fresh - s) ** 2))
        dot_file += float(np.sum(deq * s))
        dot_fresh += float(np.sum(deq_fresh * s))
    norm = math.sqrt(ss_src) if ss_src > 0 else 1.0
    e_file, e_fresh = math.sqrt(ss_file) / norm, math.sqrt(ss_fresh) / norm
    g_file, g_fresh = (dot_file / ss_src, dot_fresh / ss_src) if ss_src > 0 else (1.0, 1.0)
    band = BAND_MARGIN * e_fresh + BAND_FLOOR
    gain_limit = GAIN_SIGMAS * e_fresh / math.sqrt(info.n_elements) + GAIN_FLOOR
    problems = []
    if not math.isfinite(e_file) or e_file > band:
        problems.append(f"relative error {e_file:.3g} outside its {qtype.name} band {band:.3g}")
    if not math.isfinite(g_file) or abs(g_file - g_fresh) > gain_limit:
        problems.append(
            f"gain {g_file:.4f} where a fresh {qtype.name} quantization has {g_fresh:.4f} (limit ±{gain_limit:.2g})"
        )
    return TensorVerdict(
        m.gguf_name,
        qtype.name,
        False,
        not problems,
        e_file,
        e_fresh,
        band,
        g_file,
        g_fresh,
        gain_limit,
        "; ".join(problems),
    )


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


def _fresh(src: np.ndarray, start: int, n_rows: int, qtype, w: np.ndarray | None) -> np.ndarray:
    """A fresh quantization of rows [start, start + len(src)) of a tensor of `n_rows` flat rows; a 3-D expert
    tensor's imatrix holds one vector per expert, and each expert's rows get theirs."""
    if w is not None and w.size != src.shape[-1]:
        return convert_rows_at(src, start, n_rows, qtype, THREADS, w).reshape(-1)
    return quantize(src, qtype, imatrix=w, threads=THREADS).reshape(-1)


def _sampled_verdict(m, qtype, w, n_rows, n_cols, group, raw_file, row_bytes, source, done) -> TensorVerdict | None:
    """The sampled check (module docstring): a verdict when the sample is identical and every row sits within
    the sample's band, else None (the exhaustive check decides)."""
    block = max(group, -(-SAMPLE_BLOCK_ROWS // group) * group)
    n_blocks = -(-n_rows // block)
    picked = np.zeros(n_blocks, dtype=bool)
    picked[::SAMPLE_EVERY] = True
    picked[-1] = True
    step = max(block, CHUNK_VALUES // n_cols // block * block)
    sample_errors, rest_errors = [], []
    sums = np.zeros((2, 3))  # [sampled, rest] x [<s, s>, <d - s, d - s>, <d, s>]
    n_values = np.zeros(2)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        src = source(start, stop)
        got = raw_file[start * row_bytes : stop * row_bytes]
        for b in range(start // block, -(-stop // block)):
            if picked[b]:
                r0, r1 = b * block - start, min(stop, (b + 1) * block) - start
                fresh = _fresh(src[r0:r1], start + r0, n_rows, qtype, w)
                if not np.array_equal(fresh, got[r0 * row_bytes : r1 * row_bytes]):
                    done(start, stop)
                    return None
        deq = dequantize(got, qtype, stop - start, n_cols)
        done(start, stop)
        diff = deq - src
        ss, err, dot = _row_norms(src, src), _row_norms(diff, diff), _row_norms(deq, src)
        rows_picked = picked[np.arange(start, stop) // block]
        with np.errstate(divide="ignore", invalid="ignore"):
            row_err = np.where(ss > 0, np.sqrt(err / ss), np.where(err > 0, np.inf, 0.0))
        for k, sel in enumerate((rows_picked, ~rows_picked)):
            sums[k] += (ss[sel].sum(), err[sel].sum(), dot[sel].sum())
            n_values[k] += sel.sum() * n_cols
        sample_errors.append(row_err[rows_picked])
        rest_errors.append(row_err[~rows_picked])
    if min(sums[0, 0], sums[1, 0]) <= 0:  # all-zero source rows: leave it to the exhaustive check
        return None
    e_sample, e_rest = (math.sqrt(sums[k, 1] / sums[k, 0]) for k in (0, 1))
    g_sample, g_rest = (sums[k, 2] / sums[k, 0] for k in (0, 1))
    band = BAND_MARGIN * e_sample + BAND_FLOOR
    gain_limit = GAIN_SIGMAS * e_sample * math.sqrt(1 / n_values[0] + 1 / n_values[1]) + GAIN_FLOOR
    worst_row = BAND_MARGIN * float(np.concatenate(sample_errors).max()) + BAND_FLOOR
    rest = np.concatenate(rest_errors)
    if not (e_rest <= band and abs(g_rest - g_sample) <= gain_limit and float(rest.max(initial=0.0)) <= worst_row):
        return None
    n_sampled = int(min(n_rows, picked.sum() * block))
    return TensorVerdict(
        m.gguf_name, qtype.name, True, True, e_rest, e_sample, band, g_rest, g_sample, gain_limit, "", n_sampled
    )


def check_tensors(
    f: GGUFFile, ckpt: Checkpoint, imatrix: dict[str, np.ndarray] | None = None, full: bool = False
) -> CheckResult:
    """One result for all tensors; the per-tensor verdicts are in its data."""

    name = "tensors: match source"
    arch = f.get("general.architecture")
    spec = ckpt.spec
    try:
        fam = family_for(spec, arch if writes_as(spec, arch) else None)
    except InputError as e:
        return CheckResult(name, "fail", str(e))
    have = {t.name: t for t in f.tensors}
    verdicts, missing = [], []
    for m in fam.tensor_map(spec):
        t = have.get(m.gguf_name)
        if t is None or tuple(t.shape) != tuple(reversed(m.hf_shape)):
            missing.append(m.gguf_name)  # named by "metadata: tensors"
            continue
        verdicts.append(compare_tensor(f, ckpt, m, imatrix, full))
    bad = [v for v in verdicts if not v.ok]
    n_same = sum(v.identical for v in verdicts)
    n_band = len(verdicts) - n_same - len(bad)
    data = {"tensors": [v.to_dict() for v in verdicts], "not_compared": missing}
    made_with_imatrix = f.get("quantize.imatrix.file") is not None
    note = ""
    if made_with_imatrix and imatrix is None and n_same < len(verdicts):
        note = f"; made with imatrix {f.get('quantize.imatrix.file')!r}: pass --imatrix to check it exactly"
    counts = f"{n_same}/{len(verdicts)} identical to a fresh quantization of the source"
    n_sampled = sum(bool(v.sampled_rows) for v in verdicts)
    if n_sampled:
        counts += (
            f" ({n_sampled} large ones on a sample of 1 row block in {SAMPLE_EVERY}, every other row within the"
            " error the sample gives; --full-tensors re-quantizes every row)"
        )
    if n_band:
        worst = max((v for v in verdicts if v.ok and not v.identical), key=lambda v: v.rel_error / max(v.band, 1e-30))
        counts += f", {n_band} within their type's band (worst {worst.name}: error {worst.rel_error:.3g}, band {worst.band:.3g})"
    if missing:
        counts += f"; {len(missing)} not compared (missing or misshapen, see metadata: tensors)"
    if bad:
        shown = "; ".join(f"{v.name}: {v.problem}" for v in bad[:3]) + (
            f"; ... {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        return CheckResult(name, "fail", f"{len(bad)} tensor(s) differ from the source: {shown} ({counts}{note})", data)
    return CheckResult(name, "fail" if missing else "pass", counts + note, data)
