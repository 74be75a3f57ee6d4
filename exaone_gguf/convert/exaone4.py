"""EXAONE 4.0 (`Exaone4ForCausalLM`) -> GGUF architecture `exaone4`.

No pre-norms: q/k RMS norms and post-attention / post-FFN norms. Hybrid models (32B) slide on "L" layers;
llama.cpp runs a file as hybrid only when it has exactly 64 layers (llama-model.cpp).
"""

from __future__ import annotations

from gguf import GGUFValueType

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert.family import Family, TensorMapping, TensorNames, add_common_hparams
from exaone_gguf.gguf_io.writer import GGUFPlan

ARCH = "exaone4"


NAMES = TensorNames(
    embed="model.embed_tokens",
    layer_prefix="model.layers.{i}.",
    layer={
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
    final_norm="model.norm",
)


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return NAMES.mappings(spec)


def add_hparams(spec: ModelSpec, plan: GGUFPlan) -> None:
    add_common_hparams(spec, plan, ARCH)
    plan.add_u32(f"{ARCH}.attention.key_length", spec.head_dim)
    plan.add_u32(f"{ARCH}.attention.value_length", spec.head_dim)
    if spec.sliding_window is not None:
        plan.add_u32(f"{ARCH}.attention.sliding_window", spec.sliding_window)
        pattern = [spec.is_sliding(i) for i in range(spec.num_layers)]
        plan.add_array(f"{ARCH}.attention.sliding_window_pattern", GGUFValueType.BOOL, pattern)


FAMILY = Family("exaone4", ARCH, tensor_map, add_hparams)
