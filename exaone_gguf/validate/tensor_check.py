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
by 0.02 while its error can hide inside a 2-bit band. Rows are read in chunks: memory stays bounded.
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

    def to_dict(self) -> dict:
        """JSON-ready; an identical tensor has no error figures (none were computed)."""
        d = {
            k: v
            for k, v in self.__dict__.items()
            if (k != "problem" or v) and not (isinstance(v, float) and math.isnan(v))
        }
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}


def compare_tensor(f: GGUFFile, ckpt: Checkpoint, m: TensorMapping, imatrix: dict | None) -> TensorVerdict:
    info = f.tensor(m.gguf_name)
    qtype = info.tensor_type
    n_cols = info.shape[0]
    n_rows = info.n_elements // n_cols
    handle = m.open(ckpt.tensors)
    w = weights_for(imatrix, m.gguf_name, info.shape) if imatrix is not None and qtype not in FLOATS else None
    raw_file = f.tensor_bytes(info)
    row_bytes = raw_file.size // n_rows
    step = max(1, CHUNK_VALUES // n_cols)
    if m.transform is not None:  # whole row groups (one attention head) at a time
        step = max(m.row_group, step // m.row_group * m.row_group)

    def chunks():
        for start in range(0, n_rows, step):
            stop = min(n_rows, start + step)
            if len(m.hf_shape) > 1:
                src = handle.to_f32(start, stop).reshape(stop - start, n_cols)
            else:
                src = handle.to_f32().reshape(1, -1)
            handle.release(start, stop)
            if m.transform is not None:
                src = m.transform(src)
            if w is not None and w.size != n_cols:  # a 3-D expert tensor: each expert's rows with its own vector
                fresh = convert_rows_at(src, start, n_rows, qtype, THREADS, w).reshape(-1)
            else:
                fresh = quantize(src, qtype, imatrix=w, threads=THREADS).reshape(-1)
            yield start, stop, src, fresh, raw_file[start * row_bytes : stop * row_bytes]

    # pass 1: bytes only; an honest file ends here
    if all(np.array_equal(fresh, got) for _, _, _, fresh, got in chunks()):
        return TensorVerdict(m.gguf_name, qtype.name, True, True, *([math.nan] * 6))
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


def check_tensors(f: GGUFFile, ckpt: Checkpoint, imatrix: dict[str, np.ndarray] | None = None) -> CheckResult:
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
        verdicts.append(compare_tensor(f, ckpt, m, imatrix))
    bad = [v for v in verdicts if not v.ok]
    n_same = sum(v.identical for v in verdicts)
    n_band = len(verdicts) - n_same - len(bad)
    data = {"tensors": [v.to_dict() for v in verdicts], "not_compared": missing}
    made_with_imatrix = f.get("quantize.imatrix.file") is not None
    note = ""
    if made_with_imatrix and imatrix is None and n_same < len(verdicts):
        note = f"; made with imatrix {f.get('quantize.imatrix.file')!r}: pass --imatrix to check it exactly"
    counts = f"{n_same}/{len(verdicts)} identical to a fresh quantization of the source"
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
