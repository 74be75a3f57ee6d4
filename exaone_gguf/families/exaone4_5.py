"""EXAONE 4.5 (`Exaone4_5_ForConditionalGeneration`) -> GGUF architecture `exaone4` (the text tower).

The text tower is EXAONE 4.0's network (hybrid 3:1 sliding window, NoPE global layers, llama3 rope factors,
post-norms, q/k norms) read from `text_config`, with its tensors under `model.language_model.` and
`lm_head.weight`, plus `num_nextn_predict_layers` MTP blocks after the last layer, as llama.cpp's converter
writes them (conversion/exaone.py `Exaone4_5_TextModel`; base.mtp_mappings). The vision tower
(`model.visual.*`) belongs to the projector file (`convert --mmproj`); the text file leaves it out
(`Family.left_out` lists every one of those tensors, so nothing else is skipped silently).

Vocabulary: 153600 tokens, K-EXAONE's tokenizer. llama.cpp's converter inherits Exaone4Model.set_vocab, which
names the pre-tokenizer from the tokenizer's hash (get_vocab_base_pre); K-EXAONE's tokenizer hashes to
`exaone-moe`, so a 4.5 file is `exaone4` + `tokenizer.ggml.pre = exaone-moe`. That pair is also how this
registry tells a 4.5 file from a 4.0 one (family_of_gguf_arch). EOS is `<|endofturn|>` (id 53).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from exaone_gguf.checkpoint.spec import ConfigReading, ModelSpec, PreTokenizers
from exaone_gguf.errors import InputError
from exaone_gguf.families.base import (
    Chat,
    ChatFormat,
    Family,
    TensorMapping,
    TensorNames,
    TinyRecipe,
    TinyTokenizer,
    nextn_extras,
)
from exaone_gguf.families.exaone3 import LLAMA3_ROPE
from exaone_gguf.families.exaone4 import ARCH, HYBRID_LAYERS, NAMES, READS, hparams
from exaone_gguf.families.exaone_moe import EOT, PRE, PRE_REGEX

NAME = "exaone4_5"  # ModelSpec.family
HF_ARCHITECTURES = ("Exaone4_5_ForConditionalGeneration",)
VISUAL_PREFIX = "model.visual."

CONFIG = ConfigReading(
    family=NAME,
    layer_keys=("num_hidden_layers",),
    eps_key="rms_norm_eps",
    eps_default=1e-5,
    tie_default=False,
    sliding_window=True,
    text_config_key="text_config",
    pre_tokenizers=PreTokenizers(split_digits=PRE, gpt2_regex=PRE),  # K-EXAONE's tokenizer: one pre-tokenizer
    extras=nextn_extras,
)

TEXT_NAMES = TensorNames(
    prefix="model.language_model.",
    embed=NAMES.embed,
    layer_prefix=NAMES.layer_prefix,
    layer=NAMES.layer,
    final_norm=NAMES.final_norm,
)


def tensor_map(spec: ModelSpec) -> list[TensorMapping]:
    return TEXT_NAMES.mappings(spec, mtp=True)


def tower_shapes(t) -> dict[str, tuple[int, ...]]:
    """The vision tower's tensors (transformers' Exaone4_5_VisionModel names, below `model.visual.`) -> the shapes
    its sizes imply; `t` has a vision config's sizes as attributes (vision.config.VisionSpec, or the reading of
    config.json in vision_tensors). GQA: the fused qkv holds all query heads and `num_kv_heads` k and v heads."""
    D, F = t.hidden_size, t.intermediate_size
    qkv = D + 2 * t.num_kv_heads * (D // t.num_heads)
    P = t.patch_size
    out: dict[str, tuple[int, ...]] = {"patch_embed.proj.weight": (D, t.in_channels, t.temporal_patch_size, P, P)}
    for i in range(t.depth):
        b = f"blocks.{i}."
        out.update(
            {
                f"{b}norm1.weight": (D,),
                f"{b}norm2.weight": (D,),
                f"{b}attn.qkv.weight": (qkv, D),
                f"{b}attn.qkv.bias": (qkv,),
                f"{b}attn.proj.weight": (D, D),
                f"{b}attn.proj.bias": (D,),
                f"{b}mlp.gate_proj.weight": (F, D),
                f"{b}mlp.gate_proj.bias": (F,),
                f"{b}mlp.up_proj.weight": (F, D),
                f"{b}mlp.up_proj.bias": (F,),
                f"{b}mlp.down_proj.weight": (D, F),
                f"{b}mlp.down_proj.bias": (D,),
            }
        )
    merged = D * t.spatial_merge_size**2
    out.update(
        {
            "merger.ln_q.weight": (D,),
            "merger.mlp.0.weight": (merged, merged),
            "merger.mlp.0.bias": (merged,),
            "merger.mlp.2.weight": (t.out_hidden_size, merged),
            "merger.mlp.2.bias": (t.out_hidden_size,),
        }
    )
    return out


def vision_tensors(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every `model.visual.*` tensor -> the shape its vision_config implies: the tensors the text file leaves to
    the projector file."""
    vc = spec.config.get("vision_config")
    if not isinstance(vc, dict):
        return {}
    try:
        sizes = SimpleNamespace(
            in_channels=int(vc.get("in_channels", 3)),
            hidden_size=int(vc["hidden_size"]),
            intermediate_size=int(vc["intermediate_size"]),
            num_heads=int(vc["num_heads"]),
            num_kv_heads=int(vc.get("num_key_value_heads", vc["num_heads"])),
            patch_size=int(vc["patch_size"]),
            temporal_patch_size=int(vc.get("temporal_patch_size", 2)),
            spatial_merge_size=int(vc.get("spatial_merge_size", 2)),
            out_hidden_size=int(vc["out_hidden_size"]),
            depth=int(vc["depth"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            f"{spec.config_path}: vision_config lacks or mistypes {e}; restore the original config.json."
        ) from None
    return {VISUAL_PREFIX + name: shape for name, shape in tower_shapes(sizes).items()}


# ---- chat: EXAONE 4.5's prompt, written for this project (not LG's file, whose licence keeps it out of the package).
# It renders, byte for byte, the prompts of the chat_template.jinja LG publishes with EXAONE-4.5-33B
# (tests/test_exaone4_5_chat.py renders both on every conversation validate uses and more): tool schemas first, in a
# `<|tool_declare|>` turn ("# Tools", one `<tool>{json}</tool>` line each); then `<|role|>\n{content}<|endofturn|>\n`
# turns. Every assistant turn opens a `<think>\n...\n</think>\n\n` block: empty, except for the reasoning of the turns
# after the last text-only user turn (from `reasoning_content`, else the text before `</think>`; `skip_think` drops
# it); its text is stripped. An image part is `<vision><|image_pad|></vision>\n` (a video `<|video_pad|>`;
# `add_vision_id` numbers them), tool calls `<tool_call>{"name": ..., "arguments": ...}</tool_call>` joined by
# "\n", runs of tool results one `<|tool|>` turn of `<tool_result>...</tool_result>` lines. The generation prompt
# opens `<think>\n` unless enable_thinking is given and not true (then an empty think block). The quirks are kept
# so the renders stay identical: the reasoning loses leading characters of "<think>" as a set (str.lstrip), a first
# system turn prints its content as it is (a list too), and the role `tool_declare` is accepted.
EXAONE4_5_TEMPLATE = r"""
{%- set eot = '<|endofturn|>\n' -%}
{%- set roles = {'system': '<|system|>\n', 'user': '<|user|>\n', 'assistant': '<|assistant|>\n',
                 'tool': '<|tool|>\n', 'tool_declare': '<|tool_declare|>\n'} -%}
{%- set ns = namespace(query=messages | length - 1, image=0, video=0) -%}
{%- for m in messages -%}
  {%- if m.role == 'user' and m.content is string -%}{%- set ns.query = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- if tools is defined and tools -%}
  {{- roles.tool_declare ~ '# Tools\n' -}}
  {%- for t in tools -%}{{- '<tool>' ~ t | tojson(ensure_ascii=False) ~ '</tool>\n' -}}{%- endfor -%}
  {{- eot -}}
{%- endif -%}
{%- for m in messages -%}
  {%- if m.role not in roles -%}{{- raise_exception('Unknown role: ' ~ m.role) -}}{%- endif -%}
  {%- if loop.first and m.role == 'system' -%}
    {{- roles.system ~ m.content ~ eot -}}
  {%- elif m.role == 'assistant' -%}
    {%- set text = m.content if m.content is defined and m.content else '' -%}
    {%- set reasoning = none -%}
    {%- if m.reasoning_content is defined and m.reasoning_content -%}
      {%- set reasoning = m.reasoning_content.strip() -%}
    {%- elif text and '</think>' in text -%}
      {%- set reasoning = text.split('</think>')[0].lstrip('<think>').strip() -%}
      {%- set text = text.split('</think>')[-1] -%}
    {%- endif -%}
    {%- if not (reasoning and loop.index0 > ns.query) or (skip_think is defined and skip_think) -%}
      {%- set reasoning = none -%}
    {%- endif -%}
    {%- set text = text.strip() -%}
    {{- roles.assistant ~ '<think>\n' ~ (reasoning or '') ~ '\n</think>\n\n' ~ text -}}
    {%- if m.tool_calls -%}
      {%- if text -%}{{- '\n' -}}{%- endif -%}
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
            ~ (args if args is string else args | tojson(ensure_ascii=False)) ~ '}</tool_call>' -}}
        {%- if not loop.last -%}{{- '\n' -}}{%- endif -%}
      {%- endfor -%}
    {%- endif -%}
    {{- eot -}}
  {%- elif m.role == 'tool' -%}
    {%- if loop.first or loop.previtem.role != 'tool' -%}{{- roles.tool -}}{%- endif -%}
    {%- if m.content is defined -%}
      {{- '<tool_result>' ~ (m.content if m.content is string else m.content | tojson(ensure_ascii=False))
          ~ '</tool_result>' -}}
    {%- endif -%}
    {{- eot if loop.last or loop.nextitem.role != 'tool' else '\n' -}}
  {%- else -%}
    {{- roles[m.role] -}}
    {%- if m.content is string -%}
      {{- m.content -}}
    {%- else -%}
      {%- for part in m.content -%}
        {%- if part.type == 'image' -%}
          {%- set ns.image = ns.image + 1 -%}
          {{- ('Picture ' ~ ns.image ~ ': ' if add_vision_id else '') ~ '<vision><|image_pad|></vision>\n' -}}
        {%- elif part.type == 'video' -%}
          {%- set ns.video = ns.video + 1 -%}
          {{- ('Video ' ~ ns.video ~ ': ' if add_vision_id else '') ~ '<vision><|video_pad|></vision>\n' -}}
        {%- else -%}
          {{- part.text -}}
        {%- endif -%}
      {%- endfor -%}
    {%- endif -%}
    {{- eot -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- roles.assistant -}}
  {{- '<think>\n' if enable_thinking is not defined or enable_thinking is true else '<think>\n\n</think>\n\n' -}}
{%- endif -%}
""".strip()

# Ollama's TEMPLATE: the same prompt from Ollama's message fields (Role, Content, Thinking, ToolCalls; Tools, Think,
# IsThinkSet). Where Ollama's data or Go's template functions cannot give the Jinja template's text, it differs;
# GO_TEMPLATE_DIFFERENCES says where (tests/test_exaone4_5_chat.py measures it on validate's conversations).
EXAONE4_5_GO = (
    '{{- $q := 0 }}{{- $prev := "" }}'
    "{{- range $i, $m := .Messages }}{{ $q = $i }}{{ end }}"
    '{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $q = $i }}{{ end }}{{ end }}'
    '{{- if .Tools }}<|tool_declare|>{{ "\\n" }}# Tools{{ "\\n" }}'
    '{{- range .Tools }}<tool>{{ json . }}</tool>{{ "\\n" }}{{ end }}<|endofturn|>{{ "\\n" }}{{ end }}'
    "{{- range $i, $m := .Messages }}"
    '{{- if and (eq $prev "tool") (ne $m.Role "tool") }}<|endofturn|>{{ "\\n" }}{{ end }}'
    '{{- if eq $m.Role "assistant" }}<|assistant|>{{ "\\n" }}<think>{{ "\\n" }}'
    "{{- if and $m.Thinking (gt $i $q) }}{{ $m.Thinking }}{{ end }}"
    '{{ "\\n" }}</think>{{ "\\n\\n" }}{{ $m.Content }}'
    '{{- if $m.ToolCalls }}{{ if $m.Content }}{{ "\\n" }}{{ end }}'
    '{{- range $k, $c := $m.ToolCalls }}{{ if $k }}{{ "\\n" }}{{ end }}'
    '<tool_call>{"name": "{{ $c.Function.Name }}", "arguments": {{ json $c.Function.Arguments }}}</tool_call>'
    "{{- end }}{{ end }}"
    '<|endofturn|>{{ "\\n" }}'
    '{{- else if eq $m.Role "tool" }}'
    '{{- if eq $prev "tool" }}{{ "\\n" }}{{ else }}<|tool|>{{ "\\n" }}{{ end }}<tool_result>{{ $m.Content }}</tool_result>'
    '{{- else }}<|{{ $m.Role }}|>{{ "\\n" }}{{ $m.Content }}<|endofturn|>{{ "\\n" }}{{ end }}'
    "{{- $prev = $m.Role }}"
    "{{- end }}"
    '{{- if eq $prev "tool" }}<|endofturn|>{{ "\\n" }}{{ end }}'
    '{{- if ne $prev "assistant" }}<|assistant|>{{ "\\n" }}'
    '{{- if and .IsThinkSet (not .Think) }}<think>{{ "\\n\\n" }}</think>{{ "\\n\\n" }}{{ else }}<think>{{ "\\n" }}{{ end }}'
    "{{- end }}"
)

# Where the Go template's prompt differs from the Jinja template's (the Modelfile's comment says it).
GO_TEMPLATE_DIFFERENCES = (
    "Where this TEMPLATE differs from LG's Jinja template: Ollama prints tool schemas and tool-call arguments\n"
    "# as Go's compact JSON (no spaces after : and ,; other key order), the Jinja template as Python's; assistant\n"
    "# text and reasoning keep their surrounding whitespace (Go templates cannot strip); an image is Ollama's\n"
    "# [img-N] tag where Ollama puts it, not `<vision><|image_pad|></vision>` and a newline; skip_think and\n"
    "# add_vision_id have no Ollama switch. Everything else renders the same prompt."
)

CARD_NOTE = (
    "EXAONE 4.5 reasons by default (its chat template's `enable_thinking` defaults to true: the prompt opens a "
    '`<think>` block). For direct answers pass `"chat_template_kwargs": {"enable_thinking": false}` to '
    "`llama-server --jinja`. LG recommends temperature 1.0, top_p 0.95 (presence_penalty 1.5 for general use; "
    "temperature 0.6 and top_k 20 for OCR, documents and Korean input). Images need the projector file "
    "(`mmproj-*.gguf`): `llama-mtmd-cli -m MODEL.gguf --mmproj mmproj-MODEL.gguf`; the text file alone runs "
    "text-only. The MTP block is in the file unless it was converted with `--no-mtp`; llama.cpp does not run it."
)

CHAT = Chat(
    name="exaone4_5",
    formats=(
        ChatFormat(
            "exaone4_5",
            EXAONE4_5_GO,
            (("repeat_penalty", "1.0"), ("temperature", "1.0"), ("top_p", "0.95")),
            None,
            "EXAONE 4.5: <|role|> turns closed by <|endofturn|>; reasoning on (the prompt opens <think>).\n"
            "# LG: temperature 1.0, top_p 0.95; 0.6 / top_k 20 for OCR, documents and Korean input.\n# "
            + GO_TEMPLATE_DIFFERENCES,
            stop=EOT,
            card_note=CARD_NOTE,
        ),
    ),
    requires=("<|assistant|>", "<|user|>", "<vision>"),
    features=frozenset({"role_markers", "reasoning_tools", "images"}),
)


# ---- make-tiny: text (64 layers, hybrid, so llama.cpp enables the window) + vision + one MTP block


def _tiny() -> dict[str, Any]:
    n = HYBRID_LAYERS
    text = {
        "model_type": "exaone4",
        "architectures": ["Exaone4ForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 53,
        "pad_token_id": 0,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 128,
        "max_position_embeddings": 262144,
        "num_attention_heads": 4,
        "num_hidden_layers": n,
        "num_key_value_heads": 2,
        "num_nextn_predict_layers": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 16.0, **LLAMA3_ROPE},
        "rope_theta": 1000000,
        "sliding_window": 8,
        "sliding_window_pattern": "LLLG",
        "layer_types": ["full_attention" if i % 4 == 3 else "sliding_attention" for i in range(n)],
        "tie_word_embeddings": False,
        "vocab_size": 4096,
    }
    vision = {
        "model_type": "exaone4_5_vision",
        "depth": 4,
        "hidden_size": 64,
        "hidden_act": "silu",
        "intermediate_size": 128,
        "num_heads": 4,
        "num_key_value_heads": 2,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,  # clip.cpp windows 112 pixels for exaone4_5 whatever the key says (4x4 merged patches)
        "fullatt_block_indexes": [1, 3],  # evenly spaced: n_wa_pattern 2
        "out_hidden_size": 64,
    }
    return {
        "_name_or_path": "exaone-gguf/tiny-exaone4.5",
        "architectures": list(HF_ARCHITECTURES),
        "model_type": "exaone4_5",
        "image_token_id": 67,
        "video_token_id": 68,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "transformers_version": "5.24.0",
        "text_config": copy.deepcopy(text),
        "vision_config": vision,
    }


# Qwen2-VL image processor keys as in the 33B's preprocessor_config.json, pixel limits for tiny images
# (56x56 .. 224x224: 2x2 to 8x8 merged patches).
TINY_PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "min_pixels": 56 * 56,
    "max_pixels": 224 * 224,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


FAMILY = Family(
    name=NAME,
    arch=ARCH,
    tensor_map=tensor_map,
    hparams=hparams,  # exaone4's: block_count with the MTP blocks, nextn_predict_layers, window
    architectures=HF_ARCHITECTURES,
    config=CONFIG,
    # EXAONE 4's keys in text_config; the vision tower's keys are the projector's (vision.config)
    reads=READS | {"text_config", "vision_config", "image_token_id", "video_token_id"},
    reference="exaone4",  # the text tower is EXAONE 4's network; the MTP blocks are not run
    chat=CHAT,
    vocab_model="gpt2",
    hybrid_layers=HYBRID_LAYERS,
    tiny=(TinyRecipe("exaone4.5", _tiny, EXAONE4_5_TEMPLATE),),
    tiny_tokenizer=TinyTokenizer(
        template_in_jinja=True,
        default_template="exaone4.5",
        scale_residual=False,
        writer="exaone4_5",
        eot=EOT,
        pre_regex=PRE_REGEX,
        files=(("preprocessor_config.json", TINY_PREPROCESSOR),),
    ),
    left_out=vision_tensors,
    vision_tower=tower_shapes,
)
