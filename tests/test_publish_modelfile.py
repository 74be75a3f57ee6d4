"""Modelfile templates: each Go template, executed by a Go text/template renderer, gives exactly the prompt
the family's own Jinja template gives (LG's real templates from ../shared/fixtures)."""

from __future__ import annotations

import re

import jinja2
import pytest
from conftest import fixture_path
from gotemplate import GoTemplateError, render_go_template
from helpers import parse_modelfile

from exaone_gguf.publish.modelfile import FAMILIES, chat_family, render_modelfile

JINJA = {
    "exaone3": ("exaone-3.5", "chat_template.jinja"),
    "exaone-deep": ("exaone-deep", "chat_template.llamacpp.jinja"),
    "exaone4": ("exaone-4.0-1.2B", "chat_template.jinja"),
}
CONVERSATIONS = [
    [("user", "Hi")],
    [
        ("system", "You are EXAONE model from LG AI Research, a helpful assistant."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Bye"),
    ],
    [("user", "1+1?"), ("assistant", "2"), ("user", "2+2?")],
    [("system", "Answer in Korean.\nBe brief."), ("user", "대한민국의 수도는? {{ not a tag }}")],
    [("user", "continue this"), ("assistant", "Sure, here")],  # ends with the assistant: no generation prompt
    [("user", "q"), ("assistant", ""), ("user", "r")],
    [("system", ""), ("user", "empty system")],
]


def _jinja(family: str, messages: list[tuple[str, str]]) -> str:
    src = fixture_path(*JINJA[family]).read_text(encoding="utf-8")
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"], trim_blocks=True, lstrip_blocks=True)
    msgs = [{"role": r, "content": c} for r, c in messages]
    return env.from_string(src).render(messages=msgs, add_generation_prompt=messages[-1][0] != "assistant")


def _go(template: str, messages: list[tuple[str, str]]) -> str:
    return render_go_template(template, {"Messages": [{"Role": r, "Content": c} for r, c in messages]})


@pytest.mark.parametrize("family", sorted(JINJA))
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_go_template_renders_the_jinja_prompt(family, conv):
    messages = CONVERSATIONS[conv]
    assert _go(FAMILIES[family][0], messages) == _jinja(family, messages)


def test_expected_exaone4_prompt():
    got = _go(FAMILIES["exaone4"][0], [("system", "S"), ("user", "Hi")])
    assert got == "[|system|]\nS[|endofturn|]\n[|user|]\nHi[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n"


@pytest.mark.parametrize("family", sorted(JINJA))
def test_a_broken_template_is_caught(family):
    head, _, tail = FAMILIES[family][0].rpartition("[|endofturn|]")  # the end marker of a message turn
    broken = head + "[|end|]" + tail
    messages = CONVERSATIONS[1]
    assert _go(broken, messages) != _jinja(family, messages)


@pytest.mark.parametrize("name", ["exaone-3.5", "exaone-deep"])
def test_renderer_on_lgs_own_modelfiles(name):
    """LG's published Modelfiles (real Ollama templates, using slice/len/continue) render as their Jinja."""
    text = fixture_path(name, "Modelfile").read_text(encoding="utf-8")
    template = parse_modelfile(text)["TEMPLATE"]
    family = "exaone3" if name == "exaone-3.5" else "exaone-deep"
    messages = CONVERSATIONS[1]
    expected = _jinja(family, messages)
    assert _go(template, messages) == expected


def test_go_semantics():
    r = render_go_template
    assert r("a  {{- 1 -}}  b", {}) == "a1b"
    assert (
        r('{{ if and .A (eq .B "x" "y") }}yes{{ else if .C }}c{{ else }}no{{ end }}', {"A": 1, "B": "y", "C": 0})
        == "yes"
    )
    assert r("{{ if or .A .C }}t{{ else }}f{{ end }}", {"A": "", "C": []}) == "f"
    assert r("{{ range $i, $x := .L }}{{ $i }}{{ $x }}{{ else }}empty{{ end }}", {"L": ["a", "b"]}) == "0a1b"
    assert r("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}) == "empty"
    assert r('{{ $v := "o" }}{{ range .L }}{{ $v = . }}{{ end }}{{ $v }}', {"L": ["p", "q"]}) == "q"
    assert (
        r(
            "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}",
            {"L": [1, 2, 3, 4, 5]},
        )
        == "13"
    )
    assert r("{{ len (slice .L 1) }}{{ (index .M 0).Role }}", {"L": [1, 2, 3], "M": [{"Role": "r"}]}) == "2r"
    assert r('{{ "a\\nb" }}|{{ `raw\\n` }}', {}) == "a\nb|raw\\n"
    assert r("{{/* comment */}}x", {}) == "x"
    for bad, data in [
        ("{{ .Missing }}", {}),
        ("{{ nosuchfunc 1 }}", {}),
        ("{{ if 1 }}x", {}),
        ("{{ end }}", {}),
        ("{{ $u }}", {}),
    ]:
        with pytest.raises(GoTemplateError):
            r(bad, data)


def test_render_modelfile_and_family():
    assert chat_family("exaone4", None) == "exaone4"
    assert chat_family("exaone", "[|endofturn|] <thought>") == "exaone-deep"
    assert chat_family("exaone", "{{ x }}") == "exaone3"
    assert chat_family("llama", "[|assistant|][|endofturn|]") == "exaone3"  # EXAONE 3.x written as llama
    assert chat_family("llama", "<s>[INST]") is None
    text = render_modelfile("M-Q4_K_M.gguf", "exaone-deep", "EXAONE AI Model License Agreement 1.1 - NC")
    mf = parse_modelfile(text)
    assert mf["FROM"] == "./M-Q4_K_M.gguf" and mf["TEMPLATE"] == FAMILIES["exaone-deep"][0]
    assert ("temperature", "0.6") in mf["PARAMETER"] and ("top_p", "0.95") in mf["PARAMETER"]
    assert ("stop", '"[|endofturn|]"') in mf["PARAMETER"] and "SYSTEM" not in mf
    assert parse_modelfile(render_modelfile("x.gguf", "exaone3"))["SYSTEM"].startswith("You are EXAONE model")
    assert "TEMPLATE" not in parse_modelfile(render_modelfile("x.gguf", None))
    with pytest.raises(ValueError):
        render_modelfile("x.gguf", "exaone3", 'bad """ licence')
    assert re.search(r"(?m)^PARAMETER stop", text)
