"""validate/template_check.py against the real EXAONE templates and real llama-cpp-python."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import template_for

from exaone_gguf.validate import template_check as tc
from exaone_gguf.validate.results import CheckResult

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
BOS, EOS = "[BOS]", "[|endofturn|]"


def fixture_text(rel: str) -> str:
    path = FIXTURES / rel
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"fixture {path} is missing")
        pytest.skip(f"fixture {path} is missing")
    return path.read_text(encoding="utf-8")


REAL = {
    "exaone4": "exaone-4.0-1.2B/chat_template.jinja",
    "exaone3.5": "exaone-3.5/chat_template.jinja",
    "exaone-deep": "exaone-deep/chat_template.llamacpp.jinja",
}


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# --- the conversation set ----------------------------------------------------------------------


def test_conversation_set_covers_the_cases():
    convs = {c.name: c for c in tc.CONVERSATIONS}
    assert len(convs) == len(tc.CONVERSATIONS)
    assert convs["system_single_turn"].messages[0]["role"] == "system"
    assert convs["no_system"].messages[0]["role"] != "system"
    assert sum(m["role"] == "assistant" for m in convs["multi_turn"].messages) >= 1
    assert any("서울" in m["content"] for m in convs["korean"].messages)
    assert any(m["content"] != m["content"].strip() for m in convs["surrounding_whitespace"].messages)
    assert convs["thinking_on"].kwargs == {"enable_thinking": True}
    assert convs["thinking_off"].kwargs == {"enable_thinking": False}
    assert convs["tool_round_trip"].tools and any("tool_calls" in m for m in convs["tool_round_trip"].messages)
    roles = [m["role"] for m in convs["parallel_tools_with_system"].messages]
    assert roles[-2:] == ["tool", "tool"]


def test_conversations_for_decides_format_from_markers():
    t4, t35 = fixture_text(REAL["exaone4"]), fixture_text(REAL["exaone3.5"])
    assert tc.template_format(t4) == "exaone4"
    assert tc.template_format(t35) == tc.template_format(fixture_text(REAL["exaone-deep"])) == "exaone3"
    names4 = {c.name for c in tc.conversations_for(t4)}
    names3 = {c.name for c in tc.conversations_for(t35)}
    assert {"tool_round_trip", "thinking_on", "thinking_off"} <= names4
    assert not names3 & {"tool_round_trip", "thinking_on", "parallel_tools_with_system"}
    assert names3 < names4 | {"thought_history"}
    other = {c.name for c in tc.conversations_for("{% for m in messages %}<s>{{ m.content }}{% endfor %}")}
    assert tc.template_format("<s>") == "other" and "korean" in other and "thought_history" not in other


# --- llama-cpp-python's formatter and the built-in path ---------------------------------------


@pytest.mark.parametrize("family", list(REAL))
@pytest.mark.slow
def test_llama_cpp_python_formatter_equals_reference(family):
    tmpl = fixture_text(REAL[family])
    for conv in tc.conversations_for(tmpl):
        assert tc.render_llama_cpp(tmpl, conv, BOS, EOS) == tc.render_source(tmpl, conv, BOS, EOS), conv.name


def test_builtin_detection_and_render():
    t4, t35 = fixture_text(REAL["exaone4"]), fixture_text(REAL["exaone3.5"])
    assert tc.detect_builtin(t4) == "exaone4"
    assert tc.detect_builtin(t35) == "exaone3"
    assert tc.detect_builtin(fixture_text(REAL["exaone-deep"])) == "exaone3"
    assert tc.detect_builtin("{{ nothing llama.cpp knows }}") is None
    assert "chatml" in tc.builtin_template_names()
    conv = next(c for c in tc.CONVERSATIONS if c.name == "surrounding_whitespace")
    # the built-in EXAONE formats trim contents (llama-cpp-exaone.md 3.3)
    assert tc.render_builtin(t35, conv) == (
        "[|system|]You are a helpful assistant[|endofturn|]\n[|user|]Hello\n[|assistant|]Hi there"
        "[|endofturn|]\n[|user|]Who are you\n[|assistant|]I am an assistant[|endofturn|]\n"
        "[|user|]Another question\n[|assistant|]"
    )
    assert "[|assistant|]   I am an assistant   [|endofturn|]" in tc.render_source(t35, conv)


# --- check_templates ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(REAL))
def test_check_passes_when_equal(family):
    tmpl = fixture_text(REAL[family])
    results = by_name(tc.check_templates(tmpl, tmpl, BOS, EOS))
    for name in (
        "chat_template.present",
        "chat_template.renders",
        "chat_template.matches_source",
        "chat_template.llama_cpp_python",
    ):
        assert results[name].status == "pass", results[name]
    assert results["chat_template.matches_source"].data == {"template_text_identical": True}
    # the built-in path never fails the model
    assert results["chat_template.builtin"].status in ("pass", "warn")


def test_check_passes_for_our_template_against_the_real_one():
    results = tc.check_templates(fixture_text(REAL["exaone4"]), template_for("exaone4"), BOS, EOS)
    r = by_name(results)
    assert all(x.status in ("pass", "warn") for x in results), results
    assert r["chat_template.matches_source"].data == {"template_text_identical": False}


def test_builtin_path_warns_for_exaone4():
    t4 = fixture_text(REAL["exaone4"])
    r = by_name(tc.check_templates(t4, t4, BOS, EOS))["chat_template.builtin"]
    assert r.status == "warn"
    assert r.data["detected"] == "exaone4"
    assert "tool_round_trip" in r.data["differs_on"]
    assert "'exaone4'" in r.detail


def test_check_fails_when_gguf_template_missing():
    t4 = fixture_text(REAL["exaone4"])
    for missing in (None, ""):
        results = tc.check_templates(t4, missing, BOS, EOS)
        assert by_name(results)["chat_template.present"].status == "fail"
        assert all(r.status != "pass" for r in results)
    assert by_name(tc.check_templates(None, None, BOS, EOS))["chat_template.present"].status == "warn"


@pytest.mark.parametrize(
    "source, gguf",
    [
        ("exaone4", "exaone3.5"),
        ("exaone3.5", "exaone4"),
        ("exaone3.5", "exaone-deep"),
        ("exaone-deep", "exaone3.5"),
    ],
)
def test_check_fails_when_gguf_has_another_familys_template(source, gguf):
    results = by_name(tc.check_templates(fixture_text(REAL[source]), fixture_text(REAL[gguf]), BOS, EOS))
    assert "fail" in (results["chat_template.renders"].status, results["chat_template.matches_source"].status)
    assert results["chat_template.matches_source"].status == "fail"


@pytest.mark.parametrize(
    "family, old, new",
    [
        ("exaone4", "'[|tool|]\\n'", "'[|tool|] '"),  # one character in a role prefix
        ("exaone4", "<think>\\n\\n</think>", "<think>\\n </think>"),  # empty think block
        ("exaone4", "tojson(ensure_ascii=False)", "tojson(ensure_ascii=True)"),  # Korean in tool results
        ("exaone3.5", "'\\n'", "' '"),  # newline after a user turn
        ("exaone-deep", "<thought>\\n", "<thought>"),  # generation prompt
    ],
)
def test_check_fails_on_a_subtle_change(family, old, new):
    source = fixture_text(REAL[family])
    assert source.count(old) >= 1
    gguf = source.replace(old, new, 1)
    results = by_name(tc.check_templates(source, gguf, BOS, EOS))
    r = results["chat_template.matches_source"]
    assert r.status == "fail", r
    assert "renders differently at char" in r.detail and "expected" in r.detail
    assert r.data["differs_on"]
    # what llama-cpp-python sends differs from the source too
    assert results["chat_template.llama_cpp_python"].status == "fail"


def test_single_character_change_shows_snippet():
    source = fixture_text(REAL["exaone3.5"])
    gguf = source.replace("[|endofturn|]", "[|endofturm|]", 1)
    r = by_name(tc.check_templates(source, gguf, BOS, EOS))["chat_template.matches_source"]
    assert r.status == "fail"
    assert r.detail.startswith("'no_system' renders differently at char 20")
    assert "endofturm" in r.detail


def test_check_fails_when_gguf_template_cannot_render():
    source = fixture_text(REAL["exaone4"])
    broken = source.replace("'user': '[|user|]\\n',", "")  # now every user turn is an unknown role
    assert broken != source
    results = by_name(tc.check_templates(source, broken, BOS, EOS))
    assert results["chat_template.renders"].status == "fail"
    assert "Unknown role: user" in results["chat_template.renders"].detail
    assert results["chat_template.matches_source"].status == "fail"
    escaping = "[|system|][|assistant|][|endofturn|]{{ ''.__class__.__mro__ }}"
    r = by_name(tc.check_templates(None, escaping, BOS, EOS))["chat_template.renders"]
    assert r.status == "fail" and "sandbox" in r.detail


def test_without_source_the_gguf_template_must_still_render():
    t4 = fixture_text(REAL["exaone4"])
    results = by_name(tc.check_templates(None, t4, BOS, EOS))
    assert results["chat_template.renders"].status == "pass"
    assert len(results["chat_template.renders"].data["conversations"]) == len(tc.conversations_for(t4))
    assert results["chat_template.matches_source"].status == "skip"
    assert results["chat_template.llama_cpp_python"].status == "pass"
    bad = t4.replace("{%- if role not in role_indicators %}", "{%- if true %}")
    assert by_name(tc.check_templates(None, bad, BOS, EOS))["chat_template.renders"].status == "fail"


def test_llama_cpp_python_check_fails_where_its_variables_differ():
    # llama-cpp-python defines `functions`/`tool_choice` (as None); transformers does not, so a template
    # that looks at them renders differently there even though the GGUF holds the source template.
    tmpl = (
        "{% for m in messages %}[|{{ m.role }}|]{{ m.content }}[|endofturn|]{% endfor %}"
        "{% if functions is defined %}[|system|]{% endif %}{% if add_generation_prompt %}[|assistant|]{% endif %}"
    )
    results = by_name(tc.check_templates(tmpl, tmpl, BOS, EOS))
    assert results["chat_template.matches_source"].status == "pass"
    r = results["chat_template.llama_cpp_python"]
    assert r.status == "fail" and r.data["differs_on"]


def test_check_result_status_is_validated():
    with pytest.raises(ValueError):
        CheckResult("x", "ok")
