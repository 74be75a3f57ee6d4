"""Llama-family models (KULLM3 and other Korean Llama fine-tunes): standard HF Llama names.

    h = embed_tokens[ids]
    per layer:  h = h + o_proj(attn(rope(q(input_layernorm(h))), rope(k(...)), v(...)))
                h = h + down_proj(silu(gate_proj(post_attention_layernorm(h))) * up_proj(...))
    logits = lm_head(norm(h))

RoPE is rotate_half on the HF weights; llama.cpp's converter permutes q/k for its interleaved RoPE,
which is the same function, so the reference never needs to know about the permutation.
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
        x = rmsnorm(h, weight(ckpt, p + "input_layernorm.weight"), eps)
        q = apply_rope(split_heads(linear(ckpt, p + "self_attn.q_proj", x), nh, d), cos, sin)
        k = apply_rope(split_heads(linear(ckpt, p + "self_attn.k_proj", x), nkv, d), cos, sin)
        v = split_heads(linear(ckpt, p + "self_attn.v_proj", x), nkv, d)
        h = h + linear(ckpt, p + "self_attn.o_proj", attention(q, k, v, window=None))

        x = rmsnorm(h, weight(ckpt, p + "post_attention_layernorm.weight"), eps)  # the pre-FFN norm
        h = h + swiglu(ckpt, p + "mlp.gate_proj", p + "mlp.up_proj", p + "mlp.down_proj", x)

    h = rmsnorm(h, weight(ckpt, "model.norm.weight"), eps)
    head = "model.embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"
    return output_logits(ckpt, head, h)
