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
from exaone_gguf.convert.family import Family, TensorMapping, TensorNames, add_llama_hparams
from exaone_gguf.gguf_io.writer import GGUFPlan

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


NAMES = TensorNames(
    embed="model.embed_tokens",
    layer_prefix="model.layers.{i}.",
    layer={
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
    final_norm="model.norm",
)


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return with_rope_permutation(spec, NAMES.mappings(spec))


def exaone_tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    """EXAONE 3.x names; the GGUF names of `exaone` and `llama` are the same, only q/k rows move."""
    return with_rope_permutation(spec, exaone3.tensor_map(spec))


def add_hparams(spec: ModelSpec, plan: GGUFPlan) -> None:
    add_llama_hparams(spec, plan, ARCH)


FAMILY = Family("llama", ARCH, tensor_map, add_hparams)
EXAONE_AS_LLAMA = Family("exaone", ARCH, exaone_tensor_map, add_hparams)
