"""EXAONE 3.0 / 3.5 / Deep (`ExaoneForCausalLM`) -> GGUF architecture `exaone`.

Pre-norm Llama network under GPT-2-style names; NEOX rope, so q/k are stored unpermuted.
"""

from __future__ import annotations

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert.family import Family, TensorMapping, TensorNames, add_llama_hparams
from exaone_gguf.gguf_io.writer import GGUFPlan

ARCH = "exaone"


NAMES = TensorNames(
    embed="transformer.wte",
    layer_prefix="transformer.h.{i}.",
    layer={
        "attn_norm": "ln_1",
        "attn_q": "attn.attention.q_proj",
        "attn_k": "attn.attention.k_proj",
        "attn_v": "attn.attention.v_proj",
        "attn_output": "attn.attention.out_proj",
        "ffn_norm": "ln_2",
        "ffn_gate": "mlp.c_fc_0",
        "ffn_up": "mlp.c_fc_1",
        "ffn_down": "mlp.c_proj",
    },
    final_norm="transformer.ln_f",
)


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return NAMES.mappings(spec)


def add_hparams(spec: ModelSpec, plan: GGUFPlan) -> None:
    add_llama_hparams(spec, plan, ARCH)


FAMILY = Family("exaone", ARCH, tensor_map, add_hparams)
