"""Our own numpy implementation of ggml's reference quantizers (the imatrix=NULL path).

Byte-identical to ggml-quants.c's `quantize_row_*_ref` as built without FMA contraction
(llama-cpp-python's libggml-base is compiled -O3 without -march, so no FMA, and float
reductions stay sequential). To match bit for bit we keep every operation in float32 in C's
evaluation order, sum left to right (`_seqsum`, never numpy's pairwise sum), emulate
`nearest_int`'s magic-number rounding, C's roundf (half away from zero), the x86 float->int
truncation, ggml's fp16 conversion (round to nearest even, NaN -> 0x7E00) and the
"first element wins" tie rule of the C min/max loops. Everything is vectorised over blocks;
the only Python loops run over the 19-21 candidate scales of the K-quant searches.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from exaone_gguf.elements import f16_bits_to_f32, f32_to_f16_bits
from exaone_gguf.quantize.formats import block_size, row_nbytes, type_size

f32 = np.float32
T = GGMLQuantizationType

# Values per numpy pass: keeps the temporaries of the K-quant search inside the CPU caches.
_CHUNK_VALUES = 1 << 15


# ---------------------------------------------------------------- scalar semantics of the C code


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: add 1.5*2^23 in float32 and read the mantissa (ties to even)."""
    bits = (v.astype(f32) + f32(12582912.0)).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _trunc_int32(v: np.ndarray) -> np.ndarray:
    """C float -> int conversion as x86 cvttss2si does it: truncate; NaN/out of range -> INT32_MIN."""
    v64 = v.astype(np.float64)
    ok = np.isfinite(v64) & (v64 > -2147483649.0) & (v64 < 2147483648.0)
    return np.where(ok, np.trunc(np.where(ok, v64, 0.0)), -2147483648.0).astype(np.int64)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C roundf (half away from zero), exact in float64 for every float32 input."""
    v64 = v.astype(np.float64)
    return np.copysign(np.floor(np.abs(v64) + 0.5), v64)


def _to_int8(i: np.ndarray) -> np.ndarray:
    """Store an int into int8_t (two's-complement wrap)."""
    return ((i + 128) & 0xFF) - 128


_fp16_bits = f32_to_f16_bits  # GGML_FP32_TO_FP16
_fp16_value = f16_bits_to_f32  # GGML_FP16_TO_FP32


def _seqsum(a: np.ndarray, zero_start: bool = True) -> np.ndarray:
    """Left-to-right float32 sum over the last axis, as `float s = 0; for (...) s += a[i];`."""
    s = np.add.accumulate(a, axis=-1, dtype=f32)[..., -1]
    # 0 + a0 differs from a0 only for a0 == -0.0; adding +0 at the end reproduces that sign.
    return s + f32(0.0) if zero_start else s


def _first(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


def _argmin_first(x: np.ndarray) -> np.ndarray:
    """`if (v < m) m = v` over a row keeps the first element holding the minimum (-0.0 vs 0.0!)."""
    return _first(x, np.argmin(x, axis=-1))


def _argmax_first(x: np.ndarray) -> np.ndarray:
    return _first(x, np.argmax(x, axis=-1))


def _inv_or_zero(d: np.ndarray) -> np.ndarray:
    """`d ? 1.0f/d : 0.0f`"""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(d != 0, f32(1.0) / np.where(d != 0, d, f32(1.0)), f32(0.0)).astype(f32)


def _u16le(v: np.ndarray) -> np.ndarray:
    return v.astype("<u2").view(np.uint8).reshape(*v.shape, 2)


def _nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ((lo & 0xF) | ((hi & 0xF) << 4)).astype(np.uint8)


# ---------------------------------------------------------------- 32-value block types


def _q8_0(xb: np.ndarray) -> np.ndarray:
    amax = np.max(np.abs(xb), axis=1)
    d = amax / f32(127)
    q = _trunc_int32(_roundf(xb * _inv_or_zero(d)[:, None])) & 0xFF
    return np.concatenate([_u16le(_fp16_bits(d)), q.astype(np.uint8)], axis=1)


def _symmetric(xb: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0/Q5_0: d = max/-nmax where max is the signed value of largest magnitude (first one)."""
    mx = _first(xb, np.argmax(np.abs(xb), axis=1))
    d = mx / f32(-nmax)
    v = xb * _inv_or_zero(d)[:, None] + f32(nmax + 0.5)
    q = np.minimum(2 * nmax - 1, _to_int8(_trunc_int32(v))) & 0xFF  # MIN(.., (int8_t)..) -> uint8
    return d, q


def _q4_0(xb: np.ndarray) -> np.ndarray:
    d, q = _symmetric(xb, 8)
    return np.concatenate([_u16le(_fp16_bits(d)), _nibbles(q[:, :16], q[:, 16:])], axis=1)


def _affine(xb: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1/Q5_1: min/max from FLT_MAX/-FLT_MAX loops, d = (max-min)/levels, q = trunc((x-min)*id + 0.5)."""
    mn = _argmin_first(xb)
    mx = _argmax_first(xb)
    d = (mx - mn) / f32(levels)
    with np.errstate(over="ignore", invalid="ignore"):
        v = (xb - mn[:, None]) * _inv_or_zero(d)[:, None] + f32(0.5)
    return d, mn, _trunc_int32(v)


def _q4_1(xb: np.ndarray) -> np.ndarray:
    d, mn, q = _affine(xb, 15)
    q = np.minimum(15, _to_int8(q)) & 0xFF
    return np.concatenate([_u16le(_fp16_bits(d)), _u16le(_fp16_bits(mn)), _nibbles(q[:, :16], q[:, 16:])], axis=1)


def _qh_bits(q: np.ndarray) -> np.ndarray:
    """The fifth bit of each of the 32 values, packed into a little-endian uint32 (bit j = value j)."""
    bits = ((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    return np.bitwise_or.reduce(bits, axis=1).astype("<u4").view(np.uint8).reshape(-1, 4)


def _q5_0(xb: np.ndarray) -> np.ndarray:
    d, q = _symmetric(xb, 16)
    return np.concatenate([_u16le(_fp16_bits(d)), _qh_bits(q), _nibbles(q[:, :16], q[:, 16:])], axis=1)


def _q5_1(xb: np.ndarray) -> np.ndarray:
    d, mn, q = _affine(xb, 31)
    q = q & 0xFF  # (uint8_t)(x0 + 0.5f), no clamp in the C code
    return np.concatenate(
        [_u16le(_fp16_bits(d)), _u16le(_fp16_bits(mn)), _qh_bits(q), _nibbles(q[:, :16], q[:, 16:])], axis=1
    )


# ---------------------------------------------------------------- K-quants (256-value super-blocks)


def _make_qkx2_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """make_qkx2_quants (use_mad=false) over rows of x: returns (scale, the_min, L)."""
    mn = _argmin_first(x)
    mx = _argmax_first(x)
    sum_w = _seqsum(w, zero_start=False)
    sum_x = _seqsum(w * x, zero_start=False)
    mn = np.where(mn > 0, f32(0.0), mn).astype(f32)
    flat = mx == mn

    iscale = f32(nmax) / (mx - mn)
    scale = f32(1.0) / iscale
    L = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
    lf = L.astype(f32)
    diff = scale[:, None] * lf + mn[:, None] - x
    best = _seqsum(w * (diff * diff))

    for step in range(nstep + 1):
        # The C loop updates `min` when a candidate wins, and later candidates use the new min.
        iscale = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / (mx - mn)
        la = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
        laf = la.astype(f32)
        wl = w * laf
        sum_l = _seqsum(wl)
        sum_l2 = _seqsum(wl * laf)
        sum_xl = _seqsum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = np.where(pos, f32(0.0), this_min).astype(f32)
        this_scale = np.where(pos, sum_xl / sum_l2, this_scale).astype(f32)
        diff = this_scale[:, None] * laf + this_min[:, None] - x
        cur = _seqsum(w * (diff * diff))
        win = (D > 0) & (cur < best) & ~flat
        L = np.where(win[:, None], la, L)
        best = np.where(win, cur, best)
        scale = np.where(win, this_scale, scale)
        mn = np.where(win, this_min, mn)

    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, f32(0.0), scale).astype(f32)
    return scale, (-mn).astype(f32), L


def _q4_k(xb: np.ndarray) -> np.ndarray:
    nb = xb.shape[0]
    xs = xb.reshape(nb * 8, 32)
    av_x = np.sqrt(_seqsum(xs * xs) / f32(32))
    w = av_x[:, None] + np.abs(xs)
    scales, mins, L = _make_qkx2_quants(xs, w, 15, -1.0, 0.1, 20)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)

    max_scale = np.max(np.where(scales > 0, scales, f32(0.0)), axis=1).astype(f32)
    max_min = np.max(np.where(mins > 0, mins, f32(0.0)), axis=1).astype(f32)
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, f32(63) / max_scale, f32(0.0)).astype(f32)
        inv_min = np.where(max_min > 0, f32(63) / max_min, f32(0.0)).astype(f32)
    ls = np.minimum(63, _nearest_int(inv_scale[:, None] * scales) & 0xFF)  # (uint8_t) then MIN
    lm = np.minimum(63, _nearest_int(inv_min[:, None] * mins) & 0xFF)

    sc = np.zeros((nb, 12), dtype=np.int64)
    sc[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    sc[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    sc[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)

    d16 = _fp16_bits(max_scale / f32(63))
    dmin16 = _fp16_bits(max_min / f32(63))
    d = _fp16_value(d16)[:, None] * ls.astype(f32)
    dm = _fp16_value(dmin16)[:, None] * lm.astype(f32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l2 = np.clip(_nearest_int((xb.reshape(nb, 8, 32) + dm[..., None]) / d[..., None]), 0, 15)
    L = np.where((d != 0)[..., None], l2, L).reshape(nb, 4, 2, 32)  # `if (!d) continue;` keeps L
    qs = _nibbles(L[:, :, 0, :], L[:, :, 1, :]).reshape(nb, 128)
    return np.concatenate([_u16le(d16), _u16le(dmin16), sc.astype(np.uint8), qs], axis=1)


def _make_qx_quants_rmse1(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw=NULL) over rows of x: (scale, L)."""
    mx = _first(x, np.argmax(np.abs(x), axis=1))
    zero = np.abs(mx) < f32(1e-15)  # GROUP_MAX_EPS
    w = x * x
    wx = w * x

    def candidate(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        l = np.clip(_nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(f32)
        return l, _seqsum(wx * lf), _seqsum(w * lf * lf)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l, sumlx, suml2 = candidate(f32(-nmax) / mx)
        L = l + nmax
        scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, f32(1)), f32(0.0)).astype(f32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, sumlx, suml2 = candidate(-(f32(nmax) + f32(0.1) * f32(step)) / mx)
            win = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(win[:, None], l + nmax, L)
            scale = np.where(win, sumlx / suml2, scale).astype(f32)
            best = np.where(win, scale * sumlx, best).astype(f32)
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, f32(0.0), scale).astype(f32)
    return scale, L


def _q6_k(xb: np.ndarray) -> np.ndarray:
    nb = xb.shape[0]
    scales, L = _make_qx_quants_rmse1(xb.reshape(nb * 16, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16)

    abs_scales = np.abs(scales)
    max_scale = _first(scales, np.argmax(abs_scales, axis=1))
    zero = ~(np.max(abs_scales, axis=1) >= f32(1e-15))  # max_abs_scale < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = f32(-128) / max_scale
        d16 = _fp16_bits(f32(1) / iscale)
        sc = _to_int8(np.minimum(127, _nearest_int(iscale[:, None] * scales)))
        d = _fp16_value(d16)[:, None] * sc.astype(f32)
        l2 = np.clip(_nearest_int(xb.reshape(nb, 16, 16) / d[..., None]), -32, 31) + 32
    L = np.where((d != 0)[..., None], l2, L).reshape(nb, 2, 4, 32)  # [half, quarter, l]

    ql = np.concatenate([_nibbles(L[:, :, 0], L[:, :, 2]), _nibbles(L[:, :, 1], L[:, :, 3])], axis=2).reshape(nb, 128)
    qh = (
        ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6))
        .astype(np.uint8)
        .reshape(nb, 64)
    )
    out = np.concatenate([ql, qh, (sc & 0xFF).astype(np.uint8), _u16le(d16)], axis=1)
    out[zero] = 0  # memset(&y[i], 0, ...) for an all-zero super-block
    return out


_KERNELS = {
    T.Q8_0: _q8_0,
    T.Q4_0: _q4_0,
    T.Q4_1: _q4_1,
    T.Q5_0: _q5_0,
    T.Q5_1: _q5_1,
    T.Q4_K: _q4_k,
    T.Q6_K: _q6_k,
}

SUPPORTED: frozenset[GGMLQuantizationType] = frozenset(_KERNELS)


def quantize_rows(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Quantize float32 rows [nrows, ncols]; returns uint8 [nrows, row_nbytes] equal to ggml's bytes."""
    qtype = GGMLQuantizationType(qtype)
    kernel = _KERNELS.get(qtype)
    if kernel is None:
        raise ValueError(f"numpy backend does not implement {qtype.name}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {x.shape}")
    nrows, ncols = x.shape
    nbytes = row_nbytes(qtype, ncols)
    blck, bsize = block_size(qtype), type_size(qtype)
    blocks = x.reshape(-1, blck)
    out = np.empty((blocks.shape[0], bsize), dtype=np.uint8)
    step = max(1, _CHUNK_VALUES // blck)
    with np.errstate(all="ignore"):
        for b0 in range(0, blocks.shape[0], step):
            out[b0 : b0 + step] = kernel(blocks[b0 : b0 + step])
    return out.reshape(nrows, nbytes)
