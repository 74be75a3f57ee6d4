"""Building blocks shared by the per-family reference forwards: float32 numpy, written for reading.

Shapes: T tokens, H hidden, nH query heads, nKV key/value heads, D head_dim. Weights come from a `Weights`
mapping under GGUF tensor names (blk.{i}.attn_q.weight ...), as float32 in numpy layout [out, in] (the GGUF
shape reversed, the HF shape), so a projection is `x @ W.T`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert.rope import inv_freq
from exaone_gguf.errors import InputError
from exaone_gguf.validate.reference.weights import Weights

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
    """x @ W_out.T with W_out [V, H] read in row chunks, so a 102400 x 5120 head never sits in memory whole."""
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
    return (w * (x / np.sqrt(ms + np.float32(eps)))).astype(np.float32)


def rope_tables(spec: ModelSpec, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, D] for positions 0..T-1; angles in float64 so long contexts stay exact."""
    theta = np.outer(np.arange(n_pos, dtype=np.float64), inv_freq(spec))  # [T, D/2]
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


def attention_mask(n: int, window: int | None) -> np.ndarray:
    """Boolean [T, T], True where query q may see key k: k <= q, and q - k < window on sliding layers."""
    q = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    visible = k <= q
    if window is not None:
        visible &= (q - k) < window
    return visible


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int | None) -> np.ndarray:
    """Scaled dot-product attention with GQA. q [T, nH, D], k/v [T, nKV, D] -> [T, nH*D].

    Query head h reads kv head h // (nH / nKV) (transformers' repeat_kv). One kv group at a time keeps
    the score matrix at [group, T, T].
    """
    n, n_heads, d = q.shape
    n_kv = k.shape[1]
    group = n_heads // n_kv
    mask = attention_mask(n, window)
    scale = np.float32(1.0 / np.sqrt(d))
    out = np.empty((n, n_heads, d), dtype=np.float32)
    for g in range(n_kv):
        # the group's heads share k and v: stacked as [group * T, D], one 2-D BLAS product each (numpy's
        # batched matmul takes a loop ten times slower)
        qg = np.ascontiguousarray(q[:, g * group : (g + 1) * group].transpose(1, 0, 2)).reshape(group * n, d)
        scores = ((qg @ k[:, g].T) * scale).reshape(group, n, n)  # [group, T, T]
        scores = np.where(mask, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        out[:, g * group : (g + 1) * group] = (
            (p.reshape(group * n, n) @ v[:, g]).reshape(group, n, d).transpose(1, 0, 2)
        )
    return out.reshape(n, n_heads * d)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), with sigmoid written through tanh so large |x| cannot overflow."""
    return x * (np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x)))


def swiglu(w: Weights, gate: str, up: str, down: str, x: np.ndarray) -> np.ndarray:
    """down(silu(gate(x)) * up(x)), the FFN of every family here."""
    return linear(w, down, silu(linear(w, gate, x)) * linear(w, up, x))


def split_heads(x: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    return x.reshape(x.shape[0], n_heads, head_dim)
