"""EXAONE 3.0 / 3.5 / Deep (`ExaoneForCausalLM`) -> GGUF architecture `exaone`.

Pre-norm Llama network under GPT-2-style names; NEOX rope, so q/k are stored unpermuted.
"""

from __future__ import annotations

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert.family import Family, TensorMapping, add_common_hparams
from exaone_gguf.convert.writer import GGUFPlan

ARCH = "exaone"


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    H, I, V, D = spec.hidden_size, spec.intermediate_size, spec.vocab_size, spec.head_dim
    q, kv = spec.num_heads * D, spec.num_kv_heads * D
    out = [TensorMapping("token_embd.weight", "transformer.wte.weight", (V, H))]
    for i in range(spec.num_layers):
        hf, g = f"transformer.h.{i}.", f"blk.{i}."
        out += [
            TensorMapping(g + "attn_norm.weight", hf + "ln_1.weight", (H,)),
            TensorMapping(g + "attn_q.weight", hf + "attn.attention.q_proj.weight", (q, H)),
            TensorMapping(g + "attn_k.weight", hf + "attn.attention.k_proj.weight", (kv, H)),
            TensorMapping(g + "attn_v.weight", hf + "attn.attention.v_proj.weight", (kv, H)),
            TensorMapping(g + "attn_output.weight", hf + "attn.attention.out_proj.weight", (H, q)),
            TensorMapping(g + "ffn_norm.weight", hf + "ln_2.weight", (H,)),
            TensorMapping(g + "ffn_gate.weight", hf + "mlp.c_fc_0.weight", (I, H)),
            TensorMapping(g + "ffn_up.weight", hf + "mlp.c_fc_1.weight", (I, H)),
            TensorMapping(g + "ffn_down.weight", hf + "mlp.c_proj.weight", (H, I)),
        ]
    out.append(TensorMapping("output_norm.weight", "transformer.ln_f.weight", (H,)))
    if not spec.tie_word_embeddings:
        out.append(TensorMapping("output.weight", "lm_head.weight", (V, H)))
    return out


def add_hparams(spec: ModelSpec, plan: GGUFPlan) -> None:
    add_common_hparams(spec, plan, ARCH)
    plan.add_u32(f"{ARCH}.rope.dimension_count", spec.head_dim)
    plan.add_u32(f"{ARCH}.attention.key_length", spec.head_dim)
    plan.add_u32(f"{ARCH}.attention.value_length", spec.head_dim)


FAMILY = Family("exaone", ARCH, tensor_map, add_hparams)
