"""Chat templates for the tiny test models that `make-tiny` writes.

Written for this project (not copies of LG's files); each renders the same prompt format as the
official template of its family, which tests/test_chat_template.py checks against the real files
on a fixed set of conversations. Every tag uses `-` trimming and all output comes from string
expressions, so the source layout never leaks into the prompt.
"""

from __future__ import annotations

from exaone_gguf.errors import InputError

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

_BY_FAMILY = {
    "exaone3": EXAONE3_TEMPLATE,
    "exaone3.5": EXAONE3_TEMPLATE,
    "exaone4": EXAONE4_TEMPLATE,
    "exaone4-hybrid": EXAONE4_TEMPLATE,
    "exaone-deep": EXAONE_DEEP_TEMPLATE,
}


def template_for(family: str) -> str:
    """The chat template a tiny model of `family` ships with."""
    try:
        return _BY_FAMILY[family]
    except KeyError:
        raise InputError(
            f"No chat template for model family {family!r}; known families: {', '.join(_BY_FAMILY)}."
        ) from None
