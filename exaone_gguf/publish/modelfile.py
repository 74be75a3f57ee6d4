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
- EXAONE 4.5: "<|role|>\n{content}<|endofturn|>\n" turns after a <|tool_declare|> turn of tool schemas; every
  assistant turn opens a think block (empty but in the turns after the last user turn); generation opens
  "<|assistant|>\n<think>\n" unless Ollama's think is off. Images come from Ollama's projector (the second FROM
  line), not the template. Where Ollama cannot give LG's prompt (JSON spacing, whitespace stripping, image
  markers), the Modelfile's comment says so (families/exaone4_5.py GO_TEMPLATE_DIFFERENCES).
The generation prompt is added unless the last turn is the assistant's (Ollama then continues it).
Sampling follows each family's model card (see reference/exaone-formats.md). The templates, parameters and
stop token are declared by the family modules (exaone_gguf/families/).
"""

from __future__ import annotations

from exaone_gguf.families import chat_format, chat_format_for, chat_formats

# chat format name -> (Go template, PARAMETER lines, default SYSTEM or None, comment), as the families declare
FAMILIES: dict[str, tuple[str, list[tuple[str, str]], str | None, str]] = {
    n: (c.go_template, list(c.params), c.system, c.comment) for n, c in chat_formats().items()
}


def chat_family(arch: str | None, chat_template: str | None) -> str | None:
    """Which chat format (Modelfile family) a GGUF belongs to, by its architecture's family or a family's
    marker in its template (EXAONE 3.x written as `llama`); None when no family's format applies."""
    fmt = chat_format_for(arch, chat_template)
    return fmt.name if fmt is not None else None


def _quote(text: str) -> str:
    if '"""' in text:
        raise ValueError('text for a Modelfile may not contain """')
    return f'"""{text}"""'


def render_modelfile(
    gguf_name: str, family: str | None, license_text: str | None = None, projector: str | None = None
) -> str:
    """The Modelfile text for the GGUF file `gguf_name` (a path relative to the Modelfile); `projector`: the
    vision projector file beside it (EXAONE 4.5's mmproj), a second FROM line as Ollama's vision models take."""
    lines = [
        "# Ollama Modelfile written by exaone-gguf; use: ollama create NAME -f THIS_FILE",
        f"FROM ./{gguf_name}",
        *([f"FROM ./{projector}"] if projector else []),
        "",
    ]
    fmt = chat_format(family)
    if fmt is None:
        lines += ["# No chat template is known for this architecture; Ollama falls back to the raw prompt."]
    else:
        lines += [f"# {fmt.comment}", f'PARAMETER stop "{fmt.stop}"']
        lines += [f"PARAMETER {k} {v}" for k, v in fmt.params]
        lines += ["", f"TEMPLATE {_quote(fmt.go_template)}"]
        if fmt.system is not None:
            lines += ["", f"SYSTEM {_quote(fmt.system)}"]
    if license_text:
        lines += ["", f"LICENSE {_quote(license_text)}"]
    return "\n".join(lines) + "\n"
