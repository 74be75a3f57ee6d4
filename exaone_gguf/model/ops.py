"""Building blocks shared by the per-family reference forwards: float32 numpy, written for reading.

Shapes: T tokens, H hidden, nH query heads, nKV key/value heads, D head_dim. Weights come from a `Weights`
mapping under GGUF tensor names (blk.{i}.attn_q.weight ...), as float32 in numpy layout [out, in] (the GGUF
shape reversed, the HF shape), so a projection is `x @ W.T`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.errors import InputError

if TYPE_CHECKING:  # the source forward (source.py) uses these kernels without the converter's tables
    from exaone_gguf.model.weights import Weights

# Rows of the output matrix multiplied at a time: bounds memory for 100k-token vocabularies.
LOGIT_CHUNK_ROWS = 8192

# Observers of every projection's input (the imatrix collector): observer(weight name, x) before x @ W.T.
LINEAR_OBSERVERS: list[Callable[[str, np.ndarray], None]] = []


# How matrix products accumulate: float32 (BLAS's order: the reference) or float64 (the noise-floor forward of a
# 16-bit file, validate's structure check: a second, equally valid summation of the same products).
_ACCUMULATE: list[type] = [np.float32]


@contextmanager
def accumulate(dtype: type) -> Iterator[None]:
    """Within the block, the projections and the output head sum their products in `dtype` (np.float64 for
    the noise floor); the result is float32 either way."""
    _ACCUMULATE.append(dtype)
    try:
        yield
    finally:
        _ACCUMULATE.pop()


# Whether output_logits computes the head (False inside `without_logits`).
_LOGITS: list[bool] = [True]


@contextmanager
def without_logits() -> Iterator[None]:
    """Within the block, output_logits returns an empty [T, 0] array instead of multiplying by the output head:
    for runs that want only what happens inside the blocks (the imatrix collector, which llama-imatrix also
    leaves the head out of), the head is a tenth of the 1.2B model's work."""
    _LOGITS.append(False)
    try:
        yield
    finally:
        _LOGITS.pop()


def matmul_t(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T, summed in the current accumulation type (float32 unless inside `accumulate`)."""
    dtype = _ACCUMULATE[-1]
    if dtype is np.float32:
        return x @ w.T
    return (x.astype(dtype) @ w.astype(dtype).T).astype(np.float32)


def linear(w: Weights, name: str, x: np.ndarray) -> np.ndarray:
    """x @ W.T (+ bias when there is one; EXAONE has none, some Llama fine-tunes do)."""
    for observe in LINEAR_OBSERVERS:  # e.g. the imatrix collector: the input of every matrix product
        observe(name + ".weight", x)
    y = matmul_t(w.product_input(name + ".weight", x), w.get(name + ".weight"))
    if name + ".bias" in w:
        y += w.get(name + ".bias")
    return y


def check_tokens(spec: ModelSpec, token_ids: list[int]) -> np.ndarray:
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise InputError("reference forward: token_ids must be a non-empty flat list of integers.")
    bad = ids[(ids < 0) | (ids >= spec.vocab_size)]
    if bad.size:
        raise InputError(
            f"reference forward: token id {int(bad[0])} is outside the vocabulary (0..{spec.vocab_size - 1})."
        )
    return ids


def embed(w: Weights, name: str, ids: np.ndarray) -> np.ndarray:
    """Gather embedding rows one token id at a time: never materialises the [V, H] table."""
    rows = {int(i): w.rows(name, int(i), int(i) + 1)[0] for i in np.unique(ids)}
    return np.stack([rows[int(i)] for i in ids]).astype(np.float32)


def output_logits(w: Weights, name: str, x: np.ndarray) -> np.ndarray:
    """x @ W_out.T with W_out [V, H] read in row chunks, so a 102400 x 5120 head never sits in memory whole
    ([T, 0] inside `without_logits`)."""
    if not _LOGITS[-1]:
        return np.empty((x.shape[0], 0), dtype=np.float32)
    vocab = w.n_rows(name)
    x = w.product_input(name, x)
    out = np.empty((x.shape[0], vocab), dtype=np.float32)
    for start in range(0, vocab, LOGIT_CHUNK_ROWS):
        stop = min(start + LOGIT_CHUNK_ROWS, vocab)
        out[:, start:stop] = matmul_t(x, w.rows(name, start, stop))
    return out


def output_head(w: Weights) -> str:
    """The output matrix: its own tensor, or the embeddings when they are tied (no `output.weight`)."""
    return "output.weight" if "output.weight" in w else "token_embd.weight"


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """w * x / sqrt(mean(x^2) + eps) over the last axis (Llama RMSNorm; EXAONE q/k norms use it per head)."""
    ms = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True)
    return (w * (x / np.sqrt(ms + np.float32(eps)))).astype(np.float32, copy=False)


def segment_bounds(n: int, segments: Sequence[int] | None) -> list[tuple[int, int]]:
    """(start, stop) of each independent sequence among T tokens laid end to end: `segments` are their lengths
    (None: the T tokens are one sequence). Positions restart and attention stays inside each one."""
    if segments is None:
        return [(0, n)]
    lengths = [int(s) for s in segments]
    if any(s <= 0 for s in lengths) or sum(lengths) != n:
        raise InputError(
            f"reference forward: segment lengths {lengths} must be positive and sum to the {n} tokens given."
        )
    stops = np.cumsum(lengths).tolist()
    return list(zip([0] + stops[:-1], stops))


def rope_tables(
    inv_freq: np.ndarray, n_pos: int, segments: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, D] for positions 0..T-1 (restarting at 0 in every segment) and inverse frequencies [D/2];
    angles in float64 so long contexts stay exact."""
    pos = np.concatenate([np.arange(b - a, dtype=np.float64) for a, b in segment_bounds(n_pos, segments)])
    theta = np.outer(pos, inv_freq)  # [T, D/2]
    theta = np.concatenate([theta, theta], axis=-1)  # NEOX layout: the two halves share frequencies
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """NEOX / rotate_half RoPE on x [T, n, D]: pairs (j, j + D/2) rotate together (HF weights, unpermuted)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def apply_rope_interleaved(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """llama.cpp's "normal" RoPE on x [T, n, D]: pairs (2j, 2j + 1) rotate with frequency j. On q/k rows
    permuted as the `llama` converter does, this is the same function as `apply_rope` on HF rows."""
    half = x.shape[-1] // 2
    c, s = cos[:, None, :half], sin[:, None, :half]  # the tables repeat their first half
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = even * s + odd * c
    return out


# Queries per attention block: a causal block scores only the keys it can see (k < the block's end, and within
# the window on sliding layers), so a T-token sequence costs about (T + ATTENTION_BLOCK) / 2T of the full square.
ATTENTION_BLOCK = 128


def attention_mask(queries: np.ndarray, keys: np.ndarray, window: int | None) -> np.ndarray:
    """Additive float32 [len(queries), len(keys)] over token positions: 0 where query q may see key k (k <= q,
    and q - k < window on sliding layers), -inf elsewhere."""
    q, k = queries[:, None], keys[None, :]
    visible = k <= q
    if window is not None:
        visible &= (q - k) < window
    return np.where(visible, np.float32(0), np.float32(-np.inf))


def attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int | None, segments: Sequence[int] | None = None
) -> np.ndarray:
    """Causal scaled dot-product attention with GQA: per head softmax(q k^T / sqrt(D) over the keys k <= q, and
    q - k < window on sliding layers) @ v. q [T, nH, D], k/v [T, nKV, D] -> [T, nH*D]; with `segments` (lengths
    of sequences laid end to end) each sequence attends within itself only.

    Queries go in blocks of ATTENTION_BLOCK, each scored against only the keys it can see. The products are
    small: they run on one BLAS thread (OpenBLAS's second thread cost several times the CPU time, measured).
    """
    n, n_heads, d = q.shape
    q = q * np.float32(1.0 / np.sqrt(d))  # the scale folded into q: T x D multiplications instead of T x T
    out = np.empty((n, n_heads, d), dtype=np.float32)
    with _one_blas_thread():
        for start, stop in segment_bounds(n, segments):
            for q0 in range(start, stop, ATTENTION_BLOCK):
                q1 = min(q0 + ATTENTION_BLOCK, stop)
                k0 = start if window is None else max(start, q0 - window + 1)  # the first key a query here sees
                mask = attention_mask(np.arange(q0, q1), np.arange(k0, q1), window)
                out[q0:q1] = _attention_block(q[q0:q1], k[k0:q1], v[k0:q1], mask)
    return out.reshape(n, n_heads * d)


def _attention_block(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax(q k^T + mask) @ v per head for scaled queries q [Bq, nH, D] and keys/values k, v [Bk, nKV, D]
    -> [Bq, nH, D]. Query head h reads kv head h // (nH / nKV) (transformers' repeat_kv): a kv group's heads
    are stacked as [group * Bq, D] into one 2-D BLAS product (numpy's batched matmul takes a loop ten times
    slower), and the [group * Bq, D] output is divided by the row sums instead of normalising the scores."""
    bq, n_heads, d = q.shape
    bk, n_kv = k.shape[:2]
    group = n_heads // n_kv
    out = np.empty_like(q)
    for g in range(n_kv):
        heads = slice(g * group, (g + 1) * group)
        qg = np.ascontiguousarray(q[:, heads].transpose(1, 0, 2)).reshape(group * bq, d)
        scores = (qg @ k[:, g].T).reshape(group, bq, bk)
        scores += mask  # in place: the block's [Bq, Bk] mask, the same for every head
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores, out=scores).reshape(group * bq, bk)
        o = p @ v[:, g]
        o /= p.sum(axis=-1, keepdims=True)
        out[:, heads] = o.reshape(group, bq, d).transpose(1, 0, 2)
    return out


_BLAS: list = []  # threadpoolctl's controller, made on first use (limiting through it costs microseconds)


def _one_blas_thread():
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable: max subtracted first)."""
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) = x / (1 + exp(-x)); exp(-x) overflowing to inf for x < -88 gives the limit, -0."""
    e = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(e, out=e)  # numpy's float32 exp is vectorised; tanh took two and a half times as long
    e += np.float32(1.0)
    return np.divide(x, e, out=e)


def swiglu(w: Weights, gate: str, up: str, down: str, x: np.ndarray) -> np.ndarray:
    """down(silu(gate(x)) * up(x)), the FFN of every family here."""
    h = silu(linear(w, gate, x))
    h *= linear(w, up, x)
    return linear(w, down, h)


def split_heads(x: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    return x.reshape(x.shape[0], n_heads, head_dim)
