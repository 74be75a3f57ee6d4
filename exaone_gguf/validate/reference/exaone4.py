"""EXAONE 4.0: "QK-Reorder-Norm" blocks (Olmo2-style post-norms), optional sliding-window hybrid.

    h = embed_tokens[ids]
    per layer i:
        q, k, v = q_proj(h), k_proj(h), v_proj(h)          # no pre-norm
        q, k = q_norm(q), k_norm(k)                         # RMSNorm per head over D, before RoPE
        if uses_rope(i): q, k = rope(q), rope(k)            # hybrid models: global layers are NoPE
        h = h + post_attention_layernorm(o_proj(attn(q, k, v, window if is_sliding(i) else None)))
        h = h + post_feedforward_layernorm(down(silu(gate(h)) * up(h)))
    logits = lm_head(norm(h))                               # tied in the 1.2B
"""

from __future__ import annotations

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.validate.reference.common import (
    apply_rope,
    attention,
    check_tokens,
    embed,
    linear,
    output_logits,
    rmsnorm,
    rope_tables,
    split_heads,
    swiglu,
    weight,
)


def forward(ckpt: Checkpoint, token_ids: list[int]) -> np.ndarray:
    spec = ckpt.spec
    ids = check_tokens(spec, token_ids)
    nh, nkv, d, eps = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.rms_eps
    cos, sin = rope_tables(spec, len(ids))

    h = embed(ckpt, "model.embed_tokens.weight", ids)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        q = split_heads(linear(ckpt, p + "self_attn.q_proj", h), nh, d)
        k = split_heads(linear(ckpt, p + "self_attn.k_proj", h), nkv, d)
        v = split_heads(linear(ckpt, p + "self_attn.v_proj", h), nkv, d)
        q = rmsnorm(q, weight(ckpt, p + "self_attn.q_norm.weight"), eps)
        k = rmsnorm(k, weight(ckpt, p + "self_attn.k_norm.weight"), eps)
        if spec.uses_rope(i):
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        window = spec.sliding_window if spec.is_sliding(i) else None
        o = linear(ckpt, p + "self_attn.o_proj", attention(q, k, v, window))
        h = h + rmsnorm(o, weight(ckpt, p + "post_attention_layernorm.weight"), eps)

        f = swiglu(ckpt, p + "mlp.gate_proj", p + "mlp.up_proj", p + "mlp.down_proj", h)
        h = h + rmsnorm(f, weight(ckpt, p + "post_feedforward_layernorm.weight"), eps)

    h = rmsnorm(h, weight(ckpt, "model.norm.weight"), eps)
    head = "model.embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"
    return output_logits(ckpt, head, h)
