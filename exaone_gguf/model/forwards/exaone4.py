"""EXAONE 4.0: "QK-Reorder-Norm" blocks (Olmo2-style post-norms), optional sliding-window hybrid.

h = token_embd[ids]
per layer i:
    q, k, v = attn_q(h), attn_k(h), attn_v(h)                # no pre-norm
    q, k = attn_q_norm(q), attn_k_norm(k)                    # RMSNorm per head over D, before RoPE
    if uses_rope(i): q, k = rope(q), rope(k)                 # hybrid models: global layers are NoPE
    h = h + post_attention_norm(attn_output(attn(q, k, v, window if is_sliding(i) else None)))
    h = h + post_ffw_norm(ffn_down(silu(ffn_gate(h)) * ffn_up(h)))
logits = output(output_norm(h))                              # output is token_embd when tied (1.2B)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.model.ops import (
    apply_rope,
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


def forward(w: Weights, spec: ModelSpec, token_ids: list[int], segments: Sequence[int] | None = None) -> np.ndarray:
    """Logits [T, vocab]; `segments`: lengths of independent sequences laid end to end in token_ids."""
    ids = check_tokens(spec, token_ids)
    nh, nkv, d, eps = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.rms_eps
    cos, sin = rope_tables(inv_freq(spec), len(ids), segments)

    h = embed(w, "token_embd.weight", ids)
    for i in range(spec.num_layers):
        p = f"blk.{i}."
        q = split_heads(linear(w, p + "attn_q", h), nh, d)
        k = split_heads(linear(w, p + "attn_k", h), nkv, d)
        v = split_heads(linear(w, p + "attn_v", h), nkv, d)
        q = rmsnorm(q, w.get(p + "attn_q_norm.weight"), eps)
        k = rmsnorm(k, w.get(p + "attn_k_norm.weight"), eps)
        if spec.uses_rope(i):
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        window = spec.sliding_window if spec.is_sliding(i) else None
        o = linear(w, p + "attn_output", attention(q, k, v, window, segments))
        h = h + rmsnorm(o, w.get(p + "post_attention_norm.weight"), eps)

        f = swiglu(w, p + "ffn_gate", p + "ffn_up", p + "ffn_down", h)
        h = h + rmsnorm(f, w.get(p + "post_ffw_norm.weight"), eps)

    h = rmsnorm(h, w.get("output_norm.weight"), eps)
    return output_logits(w, output_head(w), h)
