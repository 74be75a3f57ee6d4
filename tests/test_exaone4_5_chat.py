"""EXAONE 4.5's chat template (reconstructed, see families/exaone4_5.py), its Modelfile and card note: the
template renders the prompt format EXAONE 4.5's serving examples build (K-EXAONE turns, image placeholders,
thinking on by default), the Go template gives the same prompt, the registry tells it from K-EXAONE's and
EXAONE 4.0's, and the Modelfile names the projector as a second FROM line."""

from __future__ import annotations

import pytest
from gotemplate import render_go_template
from test_publish_modelfile import CONVERSATIONS

from exaone_gguf import chat_template
from exaone_gguf.families import chat_format_for, family_of_gguf_arch, family_of_template
from exaone_gguf.families.exaone4_5 import EXAONE4_5_TEMPLATE
from exaone_gguf.publish.modelfile import FAMILIES, chat_family, parse_modelfile, render_modelfile
from exaone_gguf.validate.template_check import template_format

T = EXAONE4_5_TEMPLATE


def jinja(messages, **kw) -> str:
    return chat_template.render(T, messages, eos_token="<|endofturn|>", **kw)


def test_prompt_with_an_image_and_thinking_by_default():
    msgs = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
    ]
    want = (
        "<|system|>\nYou are a helpful assistant.<|endofturn|>\n"
        "<|user|>\n<vision><|image_pad|></vision>What is this?<|endofturn|>\n"
        "<|assistant|>\n"
    )
    assert jinja(msgs) == want + "<think>\n"
    assert jinja(msgs, enable_thinking=False) == want + "<think>\n\n</think>\n\n"


def test_past_reasoning_is_dropped():
    msgs = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>\nadd\n</think>\n\n2"},
        {"role": "user", "content": "2+2?"},
    ]
    assert "<|assistant|>\n2<|endofturn|>\n" in jinja(msgs) and "add" not in jinja(msgs)


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_go_template_renders_the_jinja_prompt(conv):
    messages = CONVERSATIONS[conv]
    go = render_go_template(FAMILIES["exaone4_5"][0], {"Messages": [{"Role": r, "Content": c} for r, c in messages]})
    msgs = [{"role": r, "content": c} for r, c in messages]
    assert go == jinja(msgs, add_generation_prompt=messages[-1][0] != "assistant")


def test_go_template_broken_is_caught():
    broken = FAMILIES["exaone4_5"][0].replace("<think>", "<thought>")
    messages = CONVERSATIONS[1]
    go = render_go_template(broken, {"Messages": [{"Role": r, "Content": c} for r, c in messages]})
    assert go != jinja([{"role": r, "content": c} for r, c in messages])


def test_registry_tells_exaone4_5_from_k_exaone_and_exaone4():
    assert family_of_template(T).name == "exaone4_5" and template_format(T) == "exaone4_5"
    assert family_of_gguf_arch("exaone4", "exaone-moe").name == "exaone4_5"
    assert family_of_gguf_arch("exaone4", "exaone4").name == "exaone4"
    assert family_of_gguf_arch("exaone4").name == "exaone4"
    assert chat_format_for("exaone4", T).name == "exaone4_5"
    assert chat_family("exaone4", None) == "exaone4"


def test_modelfile_with_projector_and_card_note():
    text = render_modelfile("M-Q4_K_M.gguf", "exaone4_5", projector="mmproj-M-F16.gguf")
    mf = parse_modelfile(text)
    assert mf["FROMS"] == ["./M-Q4_K_M.gguf", "./mmproj-M-F16.gguf"] and mf["FROM"] == "./M-Q4_K_M.gguf"
    assert ("stop", '"<|endofturn|>"') in mf["PARAMETER"] and ("temperature", "1.0") in mf["PARAMETER"]
    assert parse_modelfile(render_modelfile("M.gguf", "exaone4_5"))["FROMS"] == ["./M.gguf"]
    note = chat_format_for("exaone4", T).card_note
    assert "enable_thinking" in note and "--mmproj" in note
