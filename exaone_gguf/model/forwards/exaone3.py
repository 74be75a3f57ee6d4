"""EXAONE 3.0 / 3.5 / Deep as the `exaone` architecture: a pre-norm Llama block (llama.py) with NEOX RoPE.

    h = token_embd[ids]                   # HF transformer.wte
    per layer:  h = h + attn_output(attn(rope(attn_q(attn_norm(h))), rope(attn_k(...)), attn_v(...)))
                h = h + ffn_down(silu(ffn_gate(ffn_norm(h))) * ffn_up(ffn_norm(h)))
    logits = output(output_norm(h))       # output is token_embd when the embeddings are tied (3.5-2.4B)

`exaone` keeps q/k rows as HF stores them, so RoPE rotates pairs (j, j + D/2) (rotate_half).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.model.forwards import llama
from exaone_gguf.model.ops import apply_rope
from exaone_gguf.model.weights import Weights


def forward(w: Weights, spec: ModelSpec, token_ids: list[int], segments: Sequence[int] | None = None) -> np.ndarray:
    return llama.forward(w, spec, token_ids, rope=apply_rope, segments=segments)
