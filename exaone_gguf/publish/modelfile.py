"""Ollama Modelfiles for EXAONE GGUFs: the family's chat TEMPLATE (Go template), stop token and sampling.

The templates are written for this project. Each renders, for conversations of system/user/assistant
turns, exactly the prompt of the family's Jinja template (tests/test_publish_modelfile.py executes both):
- EXAONE 3.0/3.5: "[|role|]text", a user turn ends with "\n", other turns with "[|endofturn|]\n"; an empty
  system turn opens a chat that has none; generation opens "[|assistant|]".
- EXAONE Deep: as 3.5, but turns are joined by "\n" (user turns have no end marker) and generation opens
  "\n[|assistant|]<thought>\n". Ollama has no string functions, so reasoning in past assistant turns is
  not stripped (LG's own Modelfile has the same limit).
- EXAONE 4.0: "[|role|]\n" prefixes, every turn ends "[|endofturn|]\n", assistant text follows an empty
  "<think>\n\n</think>\n\n" block; generation opens the empty think block (enable_thinking=false, the
  template's default). Tool schemas and tool results are not rendered.
The generation prompt is added unless the last turn is the assistant's (Ollama then continues it).
Sampling follows each family's model card (see reference/exaone-formats.md).
"""

from __future__ import annotations

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


# family -> (Go template, PARAMETER lines, default SYSTEM or None, comment)
FAMILIES: dict[str, tuple[str, list[tuple[str, str]], str | None, str]] = {
    "exaone3": (
        EXAONE3_GO,
        [("repeat_penalty", "1.0")],
        "You are EXAONE model from LG AI Research, a helpful assistant.",
        "EXAONE 3.0 / 3.5 chat format; sampling as LG's EXAONE 3.5 Modelfile.",
    ),
    "exaone-deep": (
        EXAONE_DEEP_GO,
        [("repeat_penalty", "1.0"), ("temperature", "0.6"), ("top_p", "0.95"), ("num_ctx", "32768")],
        None,
        "EXAONE Deep: generation opens a <thought> block; LG advises no system prompt, temperature 0.6, top_p 0.95.\n"
        "# Past reasoning is not removed from earlier assistant turns (Ollama templates cannot edit text).",
    ),
    "exaone4": (
        EXAONE4_GO,
        [("repeat_penalty", "1.0"), ("temperature", "0.6"), ("top_p", "0.95")],
        None,
        "EXAONE 4.0, non-reasoning mode (enable_thinking=false). LG: temperature < 0.6 without reasoning,\n"
        "# 0.6 / top_p 0.95 with it; add `PARAMETER presence_penalty 1.5` if the output degenerates.",
    ),
}


def chat_family(arch: str | None, chat_template: str | None) -> str | None:
    """Which Modelfile family a GGUF belongs to: exaone4, exaone-deep, exaone3, or None (no known template)."""
    if arch == "exaone4":
        return "exaone4"
    if arch == "exaone" or (chat_template and "[|endofturn|]" in chat_template):  # also EXAONE 3.x as "llama"
        return "exaone-deep" if chat_template and "<thought>" in chat_template else "exaone3"
    return None


def _quote(text: str) -> str:
    if '"""' in text:
        raise ValueError('text for a Modelfile may not contain """')
    return f'"""{text}"""'


def render_modelfile(gguf_name: str, family: str | None, license_text: str | None = None) -> str:
    """The Modelfile text for the GGUF file `gguf_name` (a path relative to the Modelfile)."""
    lines = ["# Ollama Modelfile written by exaone-gguf; use: ollama create NAME -f THIS_FILE", f"FROM ./{gguf_name}", ""]
    if family is None:
        lines += ["# No chat template is known for this architecture; Ollama falls back to the raw prompt."]
    else:
        template, params, system, comment = FAMILIES[family]
        lines += [f"# {comment}", 'PARAMETER stop "[|endofturn|]"']
        lines += [f"PARAMETER {k} {v}" for k, v in params]
        lines += ["", f"TEMPLATE {_quote(template)}"]
        if system is not None:
            lines += ["", f"SYSTEM {_quote(system)}"]
    if license_text:
        lines += ["", f"LICENSE {_quote(license_text)}"]
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict[str, object]:
    """FROM, TEMPLATE, SYSTEM, LICENSE and PARAMETER values of a Modelfile (as Ollama reads them)."""
    import re

    out: dict[str, object] = {"PARAMETER": []}
    body = re.sub(r"(?m)^#.*$", "", text)
    for m in re.finditer(r'(?m)^(FROM|TEMPLATE|SYSTEM|LICENSE|PARAMETER)\s+("""(.*?)"""|([^\n]+))$', body, re.S):
        cmd, value = m.group(1), m.group(3) if m.group(3) is not None else m.group(4).strip()
        if cmd == "PARAMETER":
            k, _, v = value.partition(" ")
            out["PARAMETER"].append((k, v.strip()))  # type: ignore[union-attr]
        else:
            out[cmd] = value
    return out
