"""Llama family (`LlamaForCausalLM`: KULLM3, SOLAR-10.7B, ...) -> GGUF architecture `llama`; and EXAONE 3.x
written as `llama` for runtimes that predate the `exaone` architecture.

llama.cpp runs `llama` with interleaved ("normal") RoPE, which pairs dimensions (2i, 2i+1) of a head; HF
weights pair (i, i + D/2) (rotate_half). Permuting the rows of q and k inside each head makes the two the
same function, as llama.cpp's own converter does. EXAONE 3.x is a Llama network under other names (its
`exaone` architecture uses NEOX RoPE on unpermuted weights), so the same permutation gives a `llama` file
with the same logits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert import exaone3
from exaone_gguf.convert.family import Family, TensorMapping, add_common_hparams
from exaone_gguf.convert.writer import GGUFPlan

ARCH = "llama"


def permute_rows(head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """Rows of whole heads [h*D + j]: per head, new row 2i <- old row i and new row 2i+1 <- old row D/2 + i."""

    def permute(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, 2, head_dim // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    return permute


def unpermute_rows(head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """The inverse of permute_rows (GGUF `llama` q/k rows back to HF order)."""

    def unpermute(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, head_dim // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    return unpermute


def with_rope_permutation(spec: ModelSpec, mappings: list[TensorMapping]) -> list[TensorMapping]:
    """q and k weights get the permutation (applied to whole heads at a time)."""
    out = []
    for m in mappings:
        if m.gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            m = replace(m, transform=permute_rows(spec.head_dim), row_group=spec.head_dim)
        out.append(m)
    return out


def llama_names(spec: ModelSpec) -> list[TensorMapping]:
    H, I, V, D = spec.hidden_size, spec.intermediate_size, spec.vocab_size, spec.head_dim
    q, kv = spec.num_heads * D, spec.num_kv_heads * D
    out = [TensorMapping("token_embd.weight", "model.embed_tokens.weight", (V, H))]
    for i in range(spec.num_layers):
        hf, g = f"model.layers.{i}.", f"blk.{i}."
        out += [
            TensorMapping(g + "attn_norm.weight", hf + "input_layernorm.weight", (H,)),
            TensorMapping(g + "attn_q.weight", hf + "self_attn.q_proj.weight", (q, H)),
            TensorMapping(g + "attn_k.weight", hf + "self_attn.k_proj.weight", (kv, H)),
            TensorMapping(g + "attn_v.weight", hf + "self_attn.v_proj.weight", (kv, H)),
            TensorMapping(g + "attn_output.weight", hf + "self_attn.o_proj.weight", (H, q)),
            TensorMapping(g + "ffn_norm.weight", hf + "post_attention_layernorm.weight", (H,)),
            TensorMapping(g + "ffn_gate.weight", hf + "mlp.gate_proj.weight", (I, H)),
            TensorMapping(g + "ffn_up.weight", hf + "mlp.up_proj.weight", (I, H)),
            TensorMapping(g + "ffn_down.weight", hf + "mlp.down_proj.weight", (H, I)),
        ]
    out.append(TensorMapping("output_norm.weight", "model.norm.weight", (H,)))
    if not spec.tie_word_embeddings:
        out.append(TensorMapping("output.weight", "lm_head.weight", (V, H)))
    return out


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return with_rope_permutation(spec, llama_names(spec))


def exaone_tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    """EXAONE 3.x names; the GGUF names of `exaone` and `llama` are the same, only q/k rows move."""
    return with_rope_permutation(spec, exaone3.tensor_map(spec))


def add_hparams(spec: ModelSpec, plan: GGUFPlan) -> None:
    add_common_hparams(spec, plan, ARCH)
    plan.add_u32(f"{ARCH}.rope.dimension_count", spec.head_dim)
    plan.add_u32(f"{ARCH}.attention.key_length", spec.head_dim)
    plan.add_u32(f"{ARCH}.attention.value_length", spec.head_dim)


FAMILY = Family("llama", ARCH, tensor_map, add_hparams)
EXAONE_AS_LLAMA = Family("exaone", ARCH, exaone_tensor_map, add_hparams)
