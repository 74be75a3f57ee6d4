"""EXAONE 4.0 (`Exaone4ForCausalLM`) -> GGUF architecture `exaone4`.

No pre-norms: q/k RMS norms and post-attention / post-FFN norms. Hybrid models (32B) slide on "L" layers;
llama.cpp runs a file as hybrid only when it has exactly 64 layers (llama-model.cpp).
"""

from __future__ import annotations

from gguf import GGUFValueType

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert.family import Family, TensorMapping, add_common_hparams
from exaone_gguf.convert.writer import GGUFPlan

ARCH = "exaone4"


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    H, I, V, D = spec.hidden_size, spec.intermediate_size, spec.vocab_size, spec.head_dim
    q, kv = spec.num_heads * D, spec.num_kv_heads * D
    out = [TensorMapping("token_embd.weight", "model.embed_tokens.weight", (V, H))]
    for i in range(spec.num_layers):
        hf, g = f"model.layers.{i}.", f"blk.{i}."
        out += [
            TensorMapping(g + "attn_q.weight", hf + "self_attn.q_proj.weight", (q, H)),
            TensorMapping(g + "attn_k.weight", hf + "self_attn.k_proj.weight", (kv, H)),
            TensorMapping(g + "attn_v.weight", hf + "self_attn.v_proj.weight", (kv, H)),
            TensorMapping(g + "attn_output.weight", hf + "self_attn.o_proj.weight", (H, q)),
            TensorMapping(g + "attn_q_norm.weight", hf + "self_attn.q_norm.weight", (D,)),
            TensorMapping(g + "attn_k_norm.weight", hf + "self_attn.k_norm.weight", (D,)),
            TensorMapping(g + "post_attention_norm.weight", hf + "post_attention_layernorm.weight", (H,)),
            TensorMapping(g + "ffn_gate.weight", hf + "mlp.gate_proj.weight", (I, H)),
            TensorMapping(g + "ffn_up.weight", hf + "mlp.up_proj.weight", (I, H)),
            TensorMapping(g + "ffn_down.weight", hf + "mlp.down_proj.weight", (H, I)),
            TensorMapping(g + "post_ffw_norm.weight", hf + "post_feedforward_layernorm.weight", (H,)),
        ]
    out.append(TensorMapping("output_norm.weight", "model.norm.weight", (H,)))
    if not spec.tie_word_embeddings:
        out.append(TensorMapping("output.weight", "lm_head.weight", (V, H)))
    return out


def add_hparams(spec: ModelSpec, plan: GGUFPlan) -> None:
    add_common_hparams(spec, plan, ARCH)
    plan.add_u32(f"{ARCH}.attention.key_length", spec.head_dim)
    plan.add_u32(f"{ARCH}.attention.value_length", spec.head_dim)
    if spec.sliding_window is not None:
        plan.add_u32(f"{ARCH}.attention.sliding_window", spec.sliding_window)
        pattern = [spec.is_sliding(i) for i in range(spec.num_layers)]
        plan.add_array(f"{ARCH}.attention.sliding_window_pattern", GGUFValueType.BOOL, pattern)


FAMILY = Family("exaone4", ARCH, tensor_map, add_hparams)
