"""K-EXAONE (`ExaoneMoEForCausalLM`, transformers 5.1+: `ExaoneMoeForCausalLM`) -> GGUF architecture `exaone-moe`.

Pre-norm blocks with per-head q/k RMS norms; the first `first_k_dense_replace` blocks have a dense SwiGLU FFN, the
others routed experts (sigmoid scores, `e_score_correction_bias` for selection only, group-limited top-k,
renormalised, scaled by `routed_scaling_factor`) plus an always-on shared expert. Sliding-window attention on
"sliding_attention" layers (RoPE only there). `num_nextn_predict_layers` MTP blocks follow the last layer, as
llama.cpp's converter maps them (conversion/exaone.py `ExaoneMoEModel`): `mtp.layers.k.*` -> block L+k, and the
shared `mtp.fc` / `mtp.pre_fc_norm_*` / `mtp.norm` copied into every MTP block as `nextn.*`.

Experts come per expert (`mlp.experts.{x}.{gate,up,down}_proj.weight`, as LG publishes and transformers saves) or
fused (`mlp.experts.gate_up_proj` [E, 2I, H] and `mlp.experts.down_proj` [E, H, I], transformers' in-memory
layout); `spec.extras["fused_experts"]` says which (set by `with_layout` from the checkpoint's tensor names).
Either way each `ffn_*_exps` tensor is streamed expert row by expert row (families/sources.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from gguf import (
    MODEL_ARCH,
    MODEL_ARCH_NAMES,
    ExpertGatingFuncType,
    GGUFValueType,
    Keys,
    RopeScalingType,
)

from exaone_gguf.checkpoint.spec import (
    ConfigKeys,
    ConfigReading,
    ModelSpec,
    PreTokenizers,
)
from exaone_gguf.errors import InputError
from exaone_gguf.families.base import (
    Chat,
    ChatFormat,
    Family,
    HParam,
    TensorMapping,
    TinyRecipe,
    TinyTokenizer,
    common_hparams,
    f32,
    kind_shapes,
    mtp_mappings,
    sliding_window_hparams,
    u32,
)

ARCH = MODEL_ARCH_NAMES[MODEL_ARCH.EXAONE_MOE]
NAME = "exaone_moe"  # ModelSpec.family
HF_ARCHITECTURES = ("ExaoneMoEForCausalLM", "ExaoneMoeForCausalLM")
EOT = "<|endofturn|>"
PRE = "exaone-moe"  # llama.cpp's tokenizer.ggml.pre for K-EXAONE's own pre-tokenizer regex
# llama-vocab.cpp's regex for `exaone-moe` (tokenizer.json spells the contractions as `(?i:'s|'t|...)`).
PRE_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+"
)
GATING = {"sigmoid": ExpertGatingFuncType.SIGMOID, "softmax": ExpertGatingFuncType.SOFTMAX}


def _extras(k: ConfigKeys) -> dict[str, Any]:
    """The MoE and MTP values, with one-sentence refusals for the inconsistent ones."""
    cfg, path = k.cfg, k.path
    n_layers = k.int("num_hidden_layers")
    n_experts = k.int("num_experts", "num_local_experts", "n_routed_experts")
    top_k = k.int("num_experts_per_tok")
    if top_k > n_experts:
        raise InputError(f"{path}: num_experts_per_tok {top_k} exceeds num_experts {n_experts}; fix the config.")
    dense = k.int("first_k_dense_replace", "first_last_k_dense_replace", default=0, positive=False)
    # Which layers are MoE: `mlp_layer_types` (transformers 5.1+), else `is_moe_layer` (LG's first release),
    # else the dense prefix. Both lists, when present, must agree with each other and with the dense prefix.
    kinds: list[bool] | None = None
    for key, is_moe in (("mlp_layer_types", lambda v: v == "sparse"), ("is_moe_layer", lambda v: v is True)):
        lst = cfg.get(key)
        if lst is None:
            continue
        ok = {"dense", "sparse"} if key == "mlp_layer_types" else {True, False}
        if (
            not isinstance(lst, list)
            or len(lst) != n_layers
            or any(v not in ok or isinstance(v, int) != (key == "is_moe_layer") for v in lst)
        ):
            raise InputError(f"{path}: '{key}' must list {n_layers} entries of {sorted(map(str, ok))}; fix the config.")
        these = [is_moe(v) for v in lst]
        if kinds is not None and these != kinds:
            raise InputError(
                f"{path}: 'is_moe_layer' and 'mlp_layer_types' disagree about which layers are MoE; fix the config."
            )
        kinds = these
    if kinds is None:
        kinds = [i >= dense for i in range(n_layers)]
    if kinds != [i >= dense for i in range(n_layers)]:
        raise InputError(
            f"{path}: the MoE layers listed ({[i for i, m in enumerate(kinds) if m]}) are not layers {dense}..{n_layers - 1} "
            f"after the {dense} leading dense layer(s) (first_k_dense_replace); llama.cpp supports only a dense prefix."
        )
    scoring = cfg.get("scoring_func", "sigmoid")
    if scoring not in GATING:
        raise InputError(f"{path}: scoring_func {scoring!r} is not supported (sigmoid or softmax); fix the config.")
    if cfg.get("topk_method", "noaux_tc") != "noaux_tc":  # llama.cpp selects with e_score_correction_bias
        raise InputError(
            f"{path}: topk_method {cfg['topk_method']!r} is not supported (llama.cpp's exaone-moe graph routes as "
            "noaux_tc, with e_score_correction_bias); fix the config."
        )
    n_group = k.int("n_group", default=1)
    topk_group = k.int("topk_group", default=1)
    if n_experts % n_group or topk_group > n_group:
        raise InputError(
            f"{path}: n_group {n_group} / topk_group {topk_group} do not fit {n_experts} experts; fix the config."
        )
    return {
        "n_experts": n_experts,
        "top_k": top_k,
        "moe_ff": k.int("moe_intermediate_size"),
        "n_shared": k.int("num_shared_experts", default=1, positive=False),
        "routed_scale": k.float("routed_scaling_factor", default=1.0),
        "norm_topk": k.bool("norm_topk_prob", True),
        "dense_layers": dense,
        "n_group": n_group,
        "topk_group": topk_group,
        "scoring": scoring,
        "nextn": k.int("num_nextn_predict_layers", default=0, positive=False),
        "fused_experts": False,
    }


# config.json keys read besides the common ones (base.check_config_keys): experts, routing, window, MTP blocks
READS = frozenset(
    {
        "num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok", "first_k_dense_replace",
        "first_last_k_dense_replace", "mlp_layer_types", "is_moe_layer", "scoring_func", "n_group", "topk_group",
        "topk_method", "moe_intermediate_size", "num_shared_experts", "routed_scaling_factor", "norm_topk_prob",
        "num_nextn_predict_layers", "sliding_window", "sliding_window_pattern", "layer_types",
    }
)  # fmt: skip

CONFIG = ConfigReading(
    family=NAME,
    layer_keys=("num_hidden_layers",),
    eps_key="rms_norm_eps",
    eps_default=1e-5,
    tie_default=False,
    sliding_window=True,
    pre_tokenizers=PreTokenizers(split_digits=PRE, gpt2_regex=PRE),  # K-EXAONE has one pre-tokenizer
    extras=_extras,
    layout=lambda spec, names: with_layout(spec, names),
)


def _fused(spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(spec, extras={**spec.extras, "fused_experts": True})


def with_layout(spec: ModelSpec, names: Collection[str]) -> ModelSpec:
    """`spec` with `fused_experts` set from the checkpoint's tensor names (fused `experts.gate_up_proj`)."""
    fused = any(n.endswith(".mlp.experts.gate_up_proj") for n in names)
    return dataclasses.replace(spec, extras={**spec.extras, "fused_experts": fused})


_ATTN = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
}


def _block(spec: ModelSpec, bid: int, hf: str, moe: bool) -> list[TensorMapping]:
    """One block's tensors: attention, then the dense FFN or router + experts + shared expert."""
    x, H, shape = spec.extras, spec.hidden_size, kind_shapes(spec)
    out = [TensorMapping(f"blk.{bid}.{kind}.weight", f"{hf}{name}.weight", shape[kind]) for kind, name in _ATTN.items()]
    b = f"blk.{bid}"
    if not moe:
        return out + [
            TensorMapping(f"{b}.{kind}.weight", f"{hf}mlp.{proj}.weight", shape[kind])
            for kind, proj in (("ffn_gate", "gate_proj"), ("ffn_up", "up_proj"), ("ffn_down", "down_proj"))
        ]
    E, F, S = x["n_experts"], x["moe_ff"], x["moe_ff"] * x["n_shared"]
    out += [
        TensorMapping(f"{b}.ffn_gate_inp.weight", f"{hf}mlp.gate.weight", (E, H)),
        TensorMapping(f"{b}.exp_probs_b.bias", f"{hf}mlp.e_score_correction_bias", (E,)),
    ]
    ex = f"{hf}mlp.experts."
    if x["fused_experts"]:
        out += [
            TensorMapping.sliced(f"{b}.ffn_gate_exps.weight", f"{ex}gate_up_proj", (E, 2 * F, H), 1, 0, F),
            TensorMapping.sliced(f"{b}.ffn_up_exps.weight", f"{ex}gate_up_proj", (E, 2 * F, H), 1, F, 2 * F),
            TensorMapping(f"{b}.ffn_down_exps.weight", f"{ex}down_proj", (E, H, F)),
        ]
    else:
        out += [
            TensorMapping.stacked(f"{b}.ffn_gate_exps.weight", [f"{ex}{e}.gate_proj.weight" for e in range(E)], (F, H)),
            TensorMapping.stacked(f"{b}.ffn_up_exps.weight", [f"{ex}{e}.up_proj.weight" for e in range(E)], (F, H)),
            TensorMapping.stacked(f"{b}.ffn_down_exps.weight", [f"{ex}{e}.down_proj.weight" for e in range(E)], (H, F)),
        ]
    if x["n_shared"]:
        sh = f"{hf}mlp.shared_experts."
        out += [
            TensorMapping(f"{b}.ffn_gate_shexp.weight", f"{sh}gate_proj.weight", (S, H)),
            TensorMapping(f"{b}.ffn_up_shexp.weight", f"{sh}up_proj.weight", (S, H)),
            TensorMapping(f"{b}.ffn_down_shexp.weight", f"{sh}down_proj.weight", (H, S)),
        ]
    return out


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    x, L, H, V = spec.extras, spec.num_layers, spec.hidden_size, spec.vocab_size
    out = [TensorMapping("token_embd.weight", "model.embed_tokens.weight", (V, H))]
    for i in range(L):
        out += _block(spec, i, f"model.layers.{i}.", i >= x["dense_layers"])
    out += mtp_mappings(spec, lambda bid, hf: _block(spec, bid, hf, False))  # MTP blocks are dense (llama.cpp)
    out.append(TensorMapping("output_norm.weight", "model.norm.weight", (H,)))
    out.append(TensorMapping("output.weight", "lm_head.weight", (V, H)))
    return out


def hparams(spec: ModelSpec) -> list[HParam]:
    x = spec.extras
    n_all = spec.num_layers + x["nextn"]
    out = [h for h in common_hparams(spec, ARCH) if h[0] != Keys.LLM.BLOCK_COUNT.format(arch=ARCH)]
    out += [
        u32(Keys.LLM.BLOCK_COUNT, ARCH, n_all),
        u32(Keys.Attention.KEY_LENGTH, ARCH, spec.head_dim),
        u32(Keys.Attention.VALUE_LENGTH, ARCH, spec.head_dim),
        u32(Keys.LLM.EXPERT_COUNT, ARCH, x["n_experts"]),
        u32(Keys.LLM.EXPERT_USED_COUNT, ARCH, x["top_k"]),
        u32(Keys.LLM.EXPERT_GROUP_COUNT, ARCH, x["n_group"]),
        u32(Keys.LLM.EXPERT_GROUP_USED_COUNT, ARCH, x["topk_group"]),
        u32(Keys.LLM.EXPERT_GATING_FUNC, ARCH, int(GATING[x["scoring"]])),
        u32(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, ARCH, x["moe_ff"]),
        u32(Keys.LLM.EXPERT_SHARED_COUNT, ARCH, x["n_shared"]),
        u32(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH, ARCH, x["moe_ff"] * x["n_shared"]),
        f32(Keys.LLM.EXPERT_WEIGHTS_SCALE, ARCH, x["routed_scale"]),
        (Keys.LLM.EXPERT_WEIGHTS_NORM.format(arch=ARCH), GGUFValueType.BOOL, bool(x["norm_topk"]), None),
        u32(Keys.LLM.LEADING_DENSE_BLOCK_COUNT, ARCH, x["dense_layers"]),
        u32(Keys.LLM.NEXTN_PREDICT_LAYERS, ARCH, x["nextn"]),
        (Keys.Rope.SCALING_TYPE.format(arch=ARCH), GGUFValueType.STRING, RopeScalingType.NONE.value, None),
    ]
    return out + sliding_window_hparams(spec, ARCH)  # the pattern covers num_hidden_layers, as llama.cpp writes it


# ---- chat: K-EXAONE's format (llama.cpp detects `exaone-moe` by <|assistant|>, <|user|>, <|tool_declare|>)

K_EXAONE_GO = (
    '{{- $last := "" }}'
    "{{- range .Messages }}"
    '<|{{ .Role }}|>{{ "\\n" }}{{ .Content }}<|endofturn|>{{ "\\n" }}'
    "{{- $last = .Role }}"
    "{{- end }}"
    '{{- if ne $last "assistant" }}<|assistant|>{{ "\\n" }}{{ end }}'
)

# Written for this project: `<|role|>\n{content}<|endofturn|>\n` per turn (the format llama.cpp's built-in
# `exaone-moe` formatter writes), tool schemas in a <|tool_declare|> turn, tool results as <|tool|> turns.
K_EXAONE_TEMPLATE = r"""
{%- set eot = '<|endofturn|>\n' -%}
{%- if tools is defined and tools -%}
  {{- '<|tool_declare|>\n' -}}
  {%- for t in tools -%}{{- t | tojson(ensure_ascii=False) ~ '\n' -}}{%- endfor -%}
  {{- eot -}}
{%- endif -%}
{%- for m in messages -%}
  {%- if m.role not in ['system', 'user', 'assistant', 'tool'] -%}
    {{- raise_exception('Unknown role: ' ~ m.role) -}}
  {%- endif -%}
  {{- '<|' ~ m.role ~ '|>\n' ~ (m.content or '') -}}
  {%- if m.role == 'assistant' and m.tool_calls -%}
    {%- for call in m.tool_calls -%}
      {%- set fn = call.function if call.function is defined else call -%}
      {{- '<tool_call>{"name": "' ~ fn.name ~ '", "arguments": ' ~ fn.arguments | tojson(ensure_ascii=False) ~ '}</tool_call>' -}}
    {%- endfor -%}
  {%- endif -%}
  {{- eot -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}
""".strip()

CHAT = Chat(
    name="exaone-moe",
    formats=(
        ChatFormat(
            "exaone-moe",
            K_EXAONE_GO,
            (("repeat_penalty", "1.0"), ("temperature", "0.6"), ("top_p", "0.95")),
            None,
            "K-EXAONE: <|role|> turns closed by <|endofturn|>.",
            stop=EOT,
        ),
    ),
    requires=("<|assistant|>", "<|user|>", "<|tool_declare|>"),
    excludes=("<vision>",),  # EXAONE 4.5's template has K-EXAONE's markers and image placeholders
    features=frozenset({"role_markers"}),
)


# ---- make-tiny: a tiny K-EXAONE with the real key layout (leading dense layer, 8 experts, one shared expert,
# one MTP block, window 16 so that 48+ token prompts cross it)


def _tiny(spelling: str) -> dict[str, Any]:
    n = 4
    cfg: dict[str, Any] = {
        "_name_or_path": f"exaone-gguf/tiny-{'k-exaone' if spelling == 'new' else 'k-exaone-moe-e'}",
        "architectures": [HF_ARCHITECTURES[1] if spelling == "new" else HF_ARCHITECTURES[0]],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 53,
        "head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": 256,
        "initializer_range": 0.02,
        "intermediate_size": 512,
        "layer_types": ["sliding_attention" if i % 4 != 3 else "full_attention" for i in range(n)],
        "max_position_embeddings": 4096,
        "model_type": "exaone_moe",
        "moe_intermediate_size": 256,
        "n_group": 1,
        "norm_topk_prob": True,
        "num_attention_heads": 4,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_hidden_layers": n,
        "num_key_value_heads": 2,
        "num_nextn_predict_layers": 1,
        "num_shared_experts": 1,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "sliding_window": 16,
        "sliding_window_pattern": "LLLG",
        "tie_word_embeddings": False,
        "topk_group": 1,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "5.1.0" if spelling == "new" else "5.0.0.dev0",
        "use_cache": True,
        "vocab_size": 4096,
    }
    if spelling == "new":
        cfg["first_k_dense_replace"] = 1
        cfg["mlp_layer_types"] = ["dense"] + ["sparse"] * (n - 1)
    else:
        cfg["first_last_k_dense_replace"] = 1
        cfg["is_moe_layer"] = [False] + [True] * (n - 1)
    return cfg


FAMILY = Family(
    name=NAME,
    arch=ARCH,
    tensor_map=tensor_map,
    hparams=hparams,
    architectures=HF_ARCHITECTURES,
    config=CONFIG,
    reads=READS,
    harmless=frozenset({"output_router_logits", "router_aux_loss_coef"}),  # training's load-balancing loss
    nextn_always=True,
    reference="exaone_moe",
    chat=CHAT,
    vocab_model="gpt2",
    tiny=(
        TinyRecipe("k-exaone", lambda: _tiny("new"), K_EXAONE_TEMPLATE),
        TinyRecipe("k-exaone-moe-e", lambda: _tiny("old"), K_EXAONE_TEMPLATE),
        # transformers' in-memory layout saved as it is: experts.gate_up_proj [E, 2I, H], experts.down_proj
        TinyRecipe("k-exaone-fused", lambda: _tiny("new"), K_EXAONE_TEMPLATE, layout=lambda s: _fused(s)),
    ),
    tiny_tokenizer=TinyTokenizer(
        template_in_jinja=True, default_template="k-exaone", writer="k_exaone", eot=EOT, pre_regex=PRE_REGEX
    ),
)
