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
from typing import Any, Callable

import numpy as np
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES

from exaone_gguf.checkpoint.spec import ConfigReading, ModelSpec
from exaone_gguf.families import exaone3  # the sibling module, not the package's registry
from exaone_gguf.families.base import (
    BPE_PRE_TOKENIZERS,
    Family,
    HParam,
    TensorMapping,
    TensorNames,
    TinyRecipe,
    TinyTokenizer,
    llama_hparams,
)

ARCH = MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA]
NAME = "llama"  # ModelSpec.family
HF_ARCHITECTURES = ("LlamaForCausalLM",)
TINY_VOCAB_SIZE = 1024  # make-tiny config.json's vocab_size (the trained SentencePiece model is smaller: padding)

CONFIG = ConfigReading(
    family=NAME,
    layer_keys=("num_hidden_layers",),
    act_key="hidden_act",
    eps_key="rms_norm_eps",
    eps_default=1e-6,
    tie_default=False,
    pre_tokenizers=BPE_PRE_TOKENIZERS,  # byte-level BPE Llamas; SentencePiece ones have no pre-tokenizer
)


def permute_rows(head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """Rows of whole heads [h*D + j]: per head, new row 2i <- old row i and new row 2i+1 <- old row D/2 + i."""

    def permute(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, 2, head_dim // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    return permute


def with_rope_permutation(spec: ModelSpec, mappings: list[TensorMapping]) -> list[TensorMapping]:
    """q and k weights get the permutation (applied to whole heads at a time)."""
    out = []
    for m in mappings:
        if m.gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            m = replace(m, transform=permute_rows(spec.head_dim), row_group=spec.head_dim)
        out.append(m)
    return out


NAMES = TensorNames(
    prefix="model.",
    embed="embed_tokens",
    layer_prefix="layers.{i}.",
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
    final_norm="norm",
)


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return with_rope_permutation(spec, NAMES.mappings(spec))


def exaone_tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    """EXAONE 3.x names; the GGUF names of `exaone` and `llama` are the same, only q/k rows move."""
    return with_rope_permutation(spec, exaone3.tensor_map(spec))


def hparams(spec: ModelSpec) -> list[HParam]:
    return llama_hparams(spec, ARCH)


def tiny_llama() -> dict[str, Any]:
    """A KULLM3-like config.json (LlamaForCausalLM, GQA, untied head), tiny sizes."""
    return {
        "_name_or_path": "exaone-gguf/tiny-llama",
        "architectures": list(HF_ARCHITECTURES),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 256,
        "initializer_range": 0.02,
        "intermediate_size": 512,
        "max_position_embeddings": 4096,
        "model_type": NAME,
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "use_cache": True,
        "vocab_size": TINY_VOCAB_SIZE,
    }


FAMILY = Family(
    name=NAME,
    arch=ARCH,
    tensor_map=tensor_map,
    hparams=hparams,
    architectures=HF_ARCHITECTURES,
    config=CONFIG,
    reference="llama",
    tiny=(TinyRecipe("llama", tiny_llama), TinyRecipe("llama-awq", tiny_llama, awq=True)),
    tiny_tokenizer=TinyTokenizer(sentencepiece=True),
)
# EXAONE 3.x also written as `llama` (registry.ALTERNATES): permuted q/k, the Llama forward.
EXAONE_AS_LLAMA = Family(exaone3.NAME, ARCH, exaone_tensor_map, hparams, reference="llama")
