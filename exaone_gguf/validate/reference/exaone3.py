"""EXAONE 3.0 / 3.5 / Deep: a pre-norm Llama block under EXAONE's own tensor names.

    h = wte[ids]
    per layer:  h = h + out_proj(attn(rope(q(ln_1(h))), rope(k(ln_1(h))), v(ln_1(h))))
                h = h + c_proj(silu(c_fc_0(ln_2(h))) * c_fc_1(ln_2(h)))
    logits = lm_head(ln_f(h))          # lm_head is wte when the embeddings are tied (3.5-2.4B)
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

    h = embed(ckpt, "transformer.wte.weight", ids)
    for i in range(spec.num_layers):
        p = f"transformer.h.{i}."
        x = rmsnorm(h, weight(ckpt, p + "ln_1.weight"), eps)
        q = apply_rope(split_heads(linear(ckpt, p + "attn.attention.q_proj", x), nh, d), cos, sin)
        k = apply_rope(split_heads(linear(ckpt, p + "attn.attention.k_proj", x), nkv, d), cos, sin)
        v = split_heads(linear(ckpt, p + "attn.attention.v_proj", x), nkv, d)
        h = h + linear(ckpt, p + "attn.attention.out_proj", attention(q, k, v, window=None))

        x = rmsnorm(h, weight(ckpt, p + "ln_2.weight"), eps)
        h = h + swiglu(ckpt, p + "mlp.c_fc_0", p + "mlp.c_fc_1", p + "mlp.c_proj", x)

    h = rmsnorm(h, weight(ckpt, "transformer.ln_f.weight"), eps)
    head = "transformer.wte.weight" if spec.tie_word_embeddings else "lm_head.weight"
    return output_logits(ckpt, head, h)
