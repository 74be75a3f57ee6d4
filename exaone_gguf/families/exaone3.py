"""EXAONE 3.0 / 3.5 / Deep (`ExaoneForCausalLM`) -> GGUF architecture `exaone`.

Pre-norm Llama network under GPT-2-style names; NEOX rope, so q/k are stored unpermuted. Also written as
`llama` for runtimes that predate `exaone` (families/llama.py adds the q/k permutation).
"""

from __future__ import annotations

from typing import Any

from gguf import MODEL_ARCH, MODEL_ARCH_NAMES

from exaone_gguf.checkpoint.spec import ConfigReading, ModelSpec
from exaone_gguf.families.base import (
    BPE_PRE_TOKENIZERS,
    Chat,
    ChatFormat,
    Family,
    HParam,
    TensorMapping,
    TensorNames,
    TinyRecipe,
    TinyTokenizer,
    llama_hparams,
)

ARCH = MODEL_ARCH_NAMES[MODEL_ARCH.EXAONE]
NAME = "exaone"  # ModelSpec.family
HF_ARCHITECTURES = ("ExaoneForCausalLM",)
EOT = "[|endofturn|]"

CONFIG = ConfigReading(
    family=NAME,
    layer_keys=("num_layers", "num_hidden_layers"),
    act_key="activation_function",
    eps_key="layer_norm_epsilon",
    eps_default=1e-6,
    tie_default=True,  # ExaoneConfig's class default, used by 3.5-2.4B whose file may omit the key
    pre_tokenizers=BPE_PRE_TOKENIZERS,
)

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


def hparams(spec: ModelSpec) -> list[HParam]:
    return llama_hparams(spec, ARCH)


# ---- chat: Ollama Modelfile formats (Go templates giving the Jinja templates' prompts) and card notes

EXAONE3_GO = (
    '{{- if and .Messages (ne (index .Messages 0).Role "system") }}[|system|][|endofturn|]{{ "\\n" }}{{ end }}'
    '{{- $last := "" }}'
    "{{- range .Messages }}"
    '{{- if eq .Role "user" }}[|user|]{{ .Content }}{{ "\\n" }}'
    '{{- else }}[|{{ .Role }}|]{{ .Content }}[|endofturn|]{{ "\\n" }}{{ end }}'
    "{{- $last = .Role }}"
    "{{- end }}"
    '{{- if ne $last "assistant" }}[|assistant|]{{ end }}'
)

EXAONE_DEEP_GO = (
    '{{- if and .Messages (ne (index .Messages 0).Role "system") }}[|system|][|endofturn|]{{ "\\n" }}{{ end }}'
    '{{- $last := "" }}'
    "{{- range $i, $m := .Messages }}"
    '{{- if $i }}{{ "\\n" }}{{ end }}'
    '[|{{ $m.Role }}|]{{ $m.Content }}{{ if ne $m.Role "user" }}[|endofturn|]{{ end }}'
    "{{- $last = $m.Role }}"
    "{{- end }}"
    '{{- if ne $last "assistant" }}{{ "\\n" }}[|assistant|]<thought>{{ "\\n" }}{{ end }}'
)


CHAT = Chat(
    name="exaone3",
    formats=(
        ChatFormat(
            "exaone-deep",
            EXAONE_DEEP_GO,
            (("repeat_penalty", "1.0"), ("temperature", "0.6"), ("top_p", "0.95"), ("num_ctx", "32768")),
            None,
            "EXAONE Deep: generation opens a <thought> block; LG advises no system prompt, temperature 0.6, top_p 0.95.\n"
            "# Past reasoning is not removed from earlier assistant turns (Ollama templates cannot edit text).",
            stop=EOT,
            card_note=(
                "EXAONE Deep reasons inside `<thought>`…`</thought>` before it answers; LG recommends "
                "`--temp 0.6 --top-p 0.95`, no system prompt and a context of 32768 (`-c 32768`)."
            ),
            when="<thought>",
        ),
        ChatFormat(
            "exaone3",
            EXAONE3_GO,
            (("repeat_penalty", "1.0"),),
            "You are EXAONE model from LG AI Research, a helpful assistant.",
            "EXAONE 3.0 / 3.5 chat format; sampling as LG's EXAONE 3.5 Modelfile.",
            stop=EOT,
        ),
    ),
    # llama.cpp's detector: the EXAONE markers without [|tool|] -> EXAONE 3.x (3.0, 3.5 and Deep)
    requires=("[|system|]", "[|assistant|]", EOT),
    excludes=("[|tool|]",),
    features=frozenset({"role_markers"}),
    claims_marker=EOT,  # EXAONE 3.x written as `llama` keeps its template
)


# ---- make-tiny: chat templates written for this project (not copies of LG's files); each renders the same
# prompt as the official template of its family (tests/test_chat_template.py checks them on real files).

# EXAONE 3.0 / 3.5: "[|role|]content"; a user turn ends with "\n", every other turn with
# "[|endofturn|]\n"; an empty system turn opens the chat when the caller gives none.
EXAONE3_TEMPLATE = r"""
{%- set eot = '[|endofturn|]' -%}
{%- if messages and messages[0].role != 'system' -%}
  {{- '[|system|]' ~ eot ~ '\n' -}}
{%- endif -%}
{%- for m in messages -%}
  {{- '[|' ~ m.role ~ '|]' ~ m.content -}}
  {{- '\n' if m.role == 'user' else eot ~ '\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '[|assistant|]' -}}
{%- endif -%}
""".strip()

# EXAONE Deep: the 3.5 layout, but turns are separated (not terminated) by "\n", reasoning before
# "</thought>" is dropped from past turns, and generation opens a "<thought>" block.
EXAONE_DEEP_TEMPLATE = r"""
{%- if messages and messages[0].role != 'system' -%}
  {{- '[|system|][|endofturn|]\n' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- set text = m.content -%}
  {%- if '</thought>' in text -%}
    {%- set text = text.split('</thought>')[-1].lstrip('\n') -%}
  {%- endif -%}
  {{- '[|' ~ m.role ~ '|]' ~ text -}}
  {%- if m.role != 'user' -%}{{- '[|endofturn|]' -}}{%- endif -%}
  {%- if not loop.last -%}{{- '\n' -}}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '\n[|assistant|]<thought>\n' -}}
{%- endif -%}
""".strip()


_COMMON3: dict[str, Any] = {
    "activation_function": "silu",
    "architectures": list(HF_ARCHITECTURES),
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "embed_dropout": 0.0,
    "eos_token_id": 361,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": NAME,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 102400,
}
LLAMA3_ROPE = {
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}


def tiny_exaone3() -> dict[str, Any]:
    """EXAONE 3.0: no head_dim, no rope scaling, untied."""
    return {
        "_name_or_path": "exaone-gguf/tiny-exaone3",
        **_COMMON3,
        "hidden_size": 256,
        "intermediate_size": 512,
        "max_position_embeddings": 4096,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_layers": 4,
        "rope_scaling": None,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    }


def tiny_exaone35() -> dict[str, Any]:
    """EXAONE 3.5 / Deep: head_dim, llama3 scaling factor 8, tied (2.4B)."""
    return {
        "_name_or_path": "exaone-gguf/tiny-exaone3.5",
        **_COMMON3,
        "head_dim": 64,
        "hidden_size": 256,
        "intermediate_size": 512,
        "max_position_embeddings": 32768,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_layers": 4,
        "rope_scaling": {"factor": 8.0, **LLAMA3_ROPE},
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    }


def tiny_exaone_deep() -> dict[str, Any]:
    """EXAONE Deep: the 3.5 network, its own chat template."""
    return {**tiny_exaone35(), "_name_or_path": "exaone-gguf/tiny-exaone-deep"}


FAMILY = Family(
    name=NAME,
    arch=ARCH,
    tensor_map=tensor_map,
    hparams=hparams,
    architectures=HF_ARCHITECTURES,
    config=CONFIG,
    reference="exaone3",
    chat=CHAT,
    vocab_model="gpt2",
    tiny=(
        TinyRecipe("exaone3", tiny_exaone3, EXAONE3_TEMPLATE),
        TinyRecipe("exaone3.5", tiny_exaone35, EXAONE3_TEMPLATE, demo=True),
        TinyRecipe("exaone-deep", tiny_exaone_deep, EXAONE_DEEP_TEMPLATE),
        TinyRecipe("exaone3-awq", tiny_exaone3, EXAONE3_TEMPLATE, awq=True),
    ),
    tiny_tokenizer=TinyTokenizer(split_digits=True, default_template="exaone3.5"),
)
