"""Llama-shaped blocks: the `llama` architecture (KULLM3 and other Korean Llama fine-tunes; EXAONE 3.x written as
`llama`), and, with NEOX RoPE, EXAONE 3.x's own `exaone` architecture (exaone3.py).

    h = token_embd[ids]
    per layer i:  x = attn_norm(h)
                  h = h + attn_output(attn(rope(attn_q(x)), rope(attn_k(x)), attn_v(x)))
                  x = ffn_norm(h)
                  h = h + ffn_down(silu(ffn_gate(x)) * ffn_up(x))
    logits = output(output_norm(h))       # output is token_embd when the embeddings are tied

The `llama` converter permutes q/k rows within each head for llama.cpp's interleaved ("normal") RoPE, and the
weights here are in GGUF order, so this file rotates pairs (2j, 2j + 1): the same function as rotate_half on
the HF rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.model.ops import (
    apply_rope_interleaved,
    attention,
    check_tokens,
    embed,
    linear,
    output_head,
    output_logits,
    rmsnorm,
    rope_tables,
    split_heads,
    swiglu,
)
from exaone_gguf.model.rope import inv_freq
from exaone_gguf.model.weights import Weights


def forward(
    w: Weights,
    spec: ModelSpec,
    token_ids: list[int],
    rope: Callable[..., np.ndarray] = apply_rope_interleaved,
    segments: Sequence[int] | None = None,
) -> np.ndarray:
    """Logits [T, vocab]; `segments`: lengths of independent sequences laid end to end in token_ids."""
    ids = check_tokens(spec, token_ids)
    nh, nkv, d, eps = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.rms_eps
    cos, sin = rope_tables(inv_freq(spec), len(ids), segments)

    h = embed(w, "token_embd.weight", ids)
    for i in range(spec.num_layers):
        p = f"blk.{i}."
        x = rmsnorm(h, w.get(p + "attn_norm.weight"), eps)
        q = rope(split_heads(linear(w, p + "attn_q", x), nh, d), cos, sin)
        k = rope(split_heads(linear(w, p + "attn_k", x), nkv, d), cos, sin)
        v = split_heads(linear(w, p + "attn_v", x), nkv, d)
        h = h + linear(w, p + "attn_output", attention(q, k, v, window=None, segments=segments))

        x = rmsnorm(h, w.get(p + "ffn_norm.weight"), eps)
        h = h + swiglu(w, p + "ffn_gate", p + "ffn_up", p + "ffn_down", x)

    h = rmsnorm(h, w.get("output_norm.weight"), eps)
    return output_logits(w, output_head(w), h)
