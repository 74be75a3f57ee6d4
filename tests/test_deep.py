"""EXAONE Deep: its chat template (reasoning in <thought>) is embedded and checked like the others."""

from __future__ import annotations

import pytest
from conftest import fixture_path
from helpers import template_for

from exaone_gguf.families import load_checkpoint
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

TEMPLATE_CHECKS = ("chat_template.renders", "chat_template.matches_source", "chat_template.llama_cpp_python")


def test_deep_template_embedded_and_validated(tiny_dir, tiny_gguf):
    src = tiny_dir("exaone-deep")
    assert load_checkpoint(src).tokenizer.chat_template == template_for("exaone-deep")
    gguf = tiny_gguf("exaone-deep", "bf16")
    assert read_gguf(gguf).get("tokenizer.chat_template") == template_for("exaone-deep")
    assert "<thought>" in template_for("exaone-deep")
    report = validate(gguf, src, max_tokens=64)
    status = {c.name: c.status for c in report.checks}
    assert all(status[name] == "pass" for name in TEMPLATE_CHECKS), status
    assert report.passed


def test_deep_template_is_lg_llamacpp_one():
    """Our Deep template renders like the one in LG's llama.cpp instructions (fixture), on a reasoning turn."""
    import jinja2

    lg = fixture_path("exaone-deep", "chat_template.llamacpp.jinja").read_text(encoding="utf-8")
    msgs = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<thought>\n1 더하기 1\n</thought>\n\n2입니다."},
        {"role": "user", "content": "2+2?"},
    ]
    env = jinja2.Environment()
    kw = dict(messages=msgs, add_generation_prompt=True, bos_token="[BOS]", eos_token="[|endofturn|]")
    assert env.from_string(template_for("exaone-deep")).render(**kw) == env.from_string(lg).render(**kw)


def test_wrong_template_is_caught(tiny_dir, tiny_gguf):
    """A Deep GGUF checked against a 3.5 source (other template): the template checks fail."""
    report = validate(tiny_gguf("exaone-deep", "bf16"), tiny_dir("exaone3.5"), max_tokens=32)
    status = {c.name: c.status for c in report.checks}
    assert status["chat_template.matches_source"] == "fail"
