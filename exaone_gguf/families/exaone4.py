"""EXAONE 4.0 (`Exaone4ForCausalLM`) -> GGUF architecture `exaone4`.

No pre-norms: q/k RMS norms and post-attention / post-FFN norms. Hybrid models (32B) slide on "L" layers;
llama.cpp runs a file as hybrid only when it has exactly 64 layers (llama-model.cpp).
"""

from __future__ import annotations

from typing import Any

from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, Keys

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
    common_hparams,
    mtp_hparams,
    nextn_extras,
    sliding_window_hparams,
    u32,
)
from exaone_gguf.families.exaone3 import EOT, LLAMA3_ROPE

ARCH = MODEL_ARCH_NAMES[MODEL_ARCH.EXAONE4]
NAME = "exaone4"  # ModelSpec.family
HF_ARCHITECTURES = ("Exaone4ForCausalLM",)
HYBRID_LAYERS = 64  # llama.cpp enables EXAONE 4 sliding-window attention only at this depth

# config.json keys read besides the common ones (base.check_config_keys): the window and MTP blocks
READS = frozenset(
    {"sliding_window", "sliding_window_pattern", "layer_types", "num_nextn_predict_layers", "mtp_share_layers"}
)

CONFIG = ConfigReading(
    family=NAME,
    layer_keys=("num_hidden_layers",),
    act_key="hidden_act",
    eps_key="rms_norm_eps",
    eps_default=1e-5,
    tie_default=False,
    sliding_window=True,
    pre_tokenizers=BPE_PRE_TOKENIZERS,
    extras=nextn_extras,  # MTP blocks (num_nextn_predict_layers), as EXAONE 4.5's text tower has
)

NAMES = TensorNames(
    prefix="model.",
    embed="embed_tokens",
    layer_prefix="layers.{i}.",
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
    final_norm="norm",
)


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return NAMES.mappings(spec, mtp=True)


def hparams(spec: ModelSpec) -> list[HParam]:
    """As llama.cpp's Exaone4Model; with MTP blocks block_count counts them and nextn_predict_layers is set
    (Exaone4_5_TextModel), so llama.cpp's n_layer() = block_count - nextn is still num_hidden_layers."""
    out = common_hparams(spec, ARCH) + [
        u32(Keys.Attention.KEY_LENGTH, ARCH, spec.head_dim),
        u32(Keys.Attention.VALUE_LENGTH, ARCH, spec.head_dim),
    ]
    return mtp_hparams(out, spec, ARCH) + sliding_window_hparams(spec, ARCH)


# ---- chat: the Ollama Modelfile format (a Go template giving the Jinja template's prompt) and card note

EXAONE4_GO = (
    '{{- $last := "" }}'
    "{{- range .Messages }}"
    '{{- if eq .Role "assistant" }}[|assistant|]{{ "\\n" }}'
    '{{- if .Content }}<think>{{ "\\n\\n" }}</think>{{ "\\n\\n" }}{{ .Content }}{{ end }}'
    '{{- else }}[|{{ .Role }}|]{{ "\\n" }}{{ .Content }}{{ end }}'
    '[|endofturn|]{{ "\\n" }}'
    "{{- $last = .Role }}"
    "{{- end }}"
    '{{- if ne $last "assistant" }}[|assistant|]{{ "\\n" }}<think>{{ "\\n\\n" }}</think>{{ "\\n\\n" }}{{ end }}'
)


CARD_NOTE = (
    "EXAONE 4.0 has a reasoning mode that its chat template turns on with `enable_thinking`; the default is off "
    "(the prompt ends with an empty `<think>\\n\\n</think>` block). With `llama-server --jinja` pass "
    '`"chat_template_kwargs": {"enable_thinking": true}` in a request, or start the server with '
    "`--reasoning on` (older builds: `--chat-template-kwargs '{\"enable_thinking\": true}'`). "
    "LG recommends temperature 0.6 and top_p 0.95 with reasoning, a temperature below 0.6 without it. "
    "`llama-cli -cnv` cannot pass `enable_thinking`."
)


CHAT = Chat(
    name="exaone4",
    formats=(
        ChatFormat(
            "exaone4",
            EXAONE4_GO,
            (("repeat_penalty", "1.0"), ("temperature", "0.6"), ("top_p", "0.95")),
            None,
            "EXAONE 4.0, non-reasoning mode (enable_thinking=false). LG: temperature < 0.6 without reasoning,\n"
            "# 0.6 / top_p 0.95 with it; add `PARAMETER presence_penalty 1.5` if the output degenerates.",
            stop=EOT,
            card_note=CARD_NOTE,
        ),
    ),
    # llama.cpp's detector: the EXAONE markers plus [|tool|] -> EXAONE 4
    requires=("[|system|]", "[|assistant|]", EOT, "[|tool|]"),
    features=frozenset({"role_markers", "reasoning_tools"}),
)


# ---- make-tiny: a chat template written for this project, rendering the official EXAONE 4.0 prompt

# EXAONE 4.0: "[|role|]\n" prefixes, "[|endofturn|]\n" after every turn, tool schemas in the system
# turn, an empty think block before assistant text (past reasoning is dropped unless skip_think is
# false and it is the last turn), tool calls as <tool_call>{json}</tool_call>, runs of tool results
# merged into one [|tool|] turn. The tools prompt wording is the model's trained prompt, kept
# verbatim because the model expects exactly this text. One quirk is kept on purpose so renders stay
# identical: a kept "<think>" reasoning block loses 9 characters, not 7, after its tag is found.
EXAONE4_TEMPLATE = r"""
{%- set eot = '[|endofturn|]\n' -%}
{%- set empty_think = '<think>\n\n</think>\n\n' -%}
{%- set keep_last_reasoning = skip_think is defined and not skip_think -%}
{%- set has_tools = tools is defined and tools -%}
{%- macro tool_prompt(tools) -%}
  {{- '# Available Tools\nYou can use none, one, or multiple of the following tools by calling them'
      ~ ' as functions to help with the user’s query.\nHere are the tools available to you in JSON'
      ~ ' format within <tool> and </tool> tags:\n' -}}
  {%- for t in tools -%}
    {{- '<tool>' ~ t | tojson(ensure_ascii=False) ~ '</tool>\n' -}}
  {%- endfor -%}
  {{- '\nFor each function call you want to make, return a JSON object with function name and'
      ~ ' arguments within <tool_call> and </tool_call> tags, like:'
      ~ '\n<tool_call>{"name": function_1_name, "arguments": {argument_1_name: argument_1_value,'
      ~ ' argument_2_name: argument_2_value}}</tool_call>'
      ~ '\n<tool_call>{"name": function_2_name, "arguments": {...}}</tool_call>\n...'
      ~ '\nNote that if no argument name is specified for a tool, you can just print the argument'
      ~ ' value directly, without the argument name or JSON formatting.' -}}
{%- endmacro -%}
{%- for m in messages -%}
  {%- if m.role not in ['system', 'user', 'assistant', 'tool'] -%}
    {{- raise_exception('Unknown role: ' ~ m.role) -}}
  {%- endif -%}
  {%- if loop.first and m.role == 'system' -%}
    {{- '[|system|]\n' ~ m.content -}}
    {%- if has_tools -%}{{- '\n\n' ~ tool_prompt(tools) -}}{%- endif -%}
    {{- eot -}}
  {%- else -%}
    {%- if loop.first and has_tools -%}
      {{- '[|system|]\n' ~ tool_prompt(tools) ~ eot -}}
    {%- endif -%}
    {%- if m.role == 'assistant' -%}
      {{- '[|assistant|]\n' -}}
      {%- if m.content -%}
        {%- set answer = m.content -%}
        {%- if '</think>' in m.content -%}
          {%- set answer = m.content.split('</think>')[-1].strip() -%}
          {%- set reasoning = m.content.split('</think>')[0].strip() -%}
          {%- if reasoning.startswith('<think>') -%}
            {%- set reasoning = reasoning[9:].strip() -%}
          {%- endif -%}
        {%- endif -%}
        {%- if m.reasoning_content -%}
          {%- set reasoning = m.reasoning_content -%}
        {%- endif -%}
        {%- if keep_last_reasoning and loop.last and reasoning is defined -%}
          {{- '<think>\n' ~ reasoning ~ '\n</think>\n\n' -}}
        {%- else -%}
          {{- empty_think -}}
        {%- endif -%}
        {{- answer -}}
      {%- endif -%}
      {%- if m.tool_calls -%}
        {{- '\n' if m.content else empty_think -}}
        {%- for call in m.tool_calls -%}
          {%- set fn = call.function if call.function is defined else call -%}
          {%- if fn.arguments is defined -%}
            {%- set args = fn.arguments -%}
          {%- elif fn.parameters is defined -%}
            {%- set args = fn.parameters -%}
          {%- else -%}
            {{- raise_exception('arguments or parameters are mandatory: ' ~ fn) -}}
          {%- endif -%}
          {{- '<tool_call>{"name": "' ~ fn.name ~ '", "arguments": '
              ~ args | tojson(ensure_ascii=False) ~ '}</tool_call>' -}}
          {%- if not loop.last -%}{{- '\n' -}}{%- endif -%}
        {%- endfor -%}
      {%- endif -%}
      {{- eot -}}
    {%- elif m.role == 'tool' -%}
      {%- if loop.first or loop.previtem.role != 'tool' -%}{{- '[|tool|]\n' -}}{%- endif -%}
      {%- if m.content is defined -%}
        {{- '<tool_result>{"result": ' ~ m.content | tojson(ensure_ascii=False) ~ '}</tool_result>' -}}
      {%- endif -%}
      {{- eot if loop.last or loop.nextitem.role != 'tool' else '\n' -}}
    {%- else -%}
      {{- '[|' ~ m.role ~ '|]\n' ~ m.content ~ eot -}}
    {%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '[|assistant|]\n' -}}
  {{- '<think>\n' if enable_thinking is defined and enable_thinking is true else empty_think -}}
{%- endif -%}
""".strip()


def _tiny(hybrid: bool) -> dict[str, Any]:
    n_layers = HYBRID_LAYERS if hybrid else 4  # llama.cpp runs EXAONE 4 as hybrid only with exactly 64 layers
    layer_types = ["full_attention" if not hybrid or i % 4 == 3 else "sliding_attention" for i in range(n_layers)]
    return {
        "_name_or_path": f"exaone-gguf/tiny-{'exaone4-hybrid' if hybrid else 'exaone4'}",
        "architectures": list(HF_ARCHITECTURES),
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 361,
        "head_dim": 16 if hybrid else 64,
        "hidden_act": "silu",
        "hidden_size": 64 if hybrid else 256,
        "initializer_range": 0.02,
        "intermediate_size": 128 if hybrid else 512,
        "layer_types": layer_types,
        "max_position_embeddings": 131072 if hybrid else 65536,
        "model_type": NAME,
        "num_attention_heads": 4,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 16.0, **LLAMA3_ROPE},
        "rope_theta": 1000000.0,
        "sliding_window": 8 if hybrid else None,
        "sliding_window_pattern": "LLLG" if hybrid else None,
        "tie_word_embeddings": not hybrid,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.54.0",
        "use_cache": True,
        "vocab_size": 102400,
    }


FAMILY = Family(
    name=NAME,
    arch=ARCH,
    tensor_map=tensor_map,
    hparams=hparams,
    architectures=HF_ARCHITECTURES,
    config=CONFIG,
    reads=READS,
    reference="exaone4",
    chat=CHAT,
    vocab_model="gpt2",
    hybrid_layers=HYBRID_LAYERS,
    tiny=(
        TinyRecipe("exaone4", lambda: _tiny(False), EXAONE4_TEMPLATE, demo=True),
        TinyRecipe("exaone4-hybrid", lambda: _tiny(True), EXAONE4_TEMPLATE),
    ),
    tiny_tokenizer=TinyTokenizer(template_in_jinja=True, default_template="exaone4", scale_residual=False),
)
