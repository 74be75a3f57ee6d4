"""chat_template.render (sandboxed, bounded, transformers' semantics) and our tiny-model templates."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest
from helpers import template_for

from exaone_gguf.chat_template import (
    MAX_OUTPUT_CHARS,
    TIMEOUT_S,
    TemplateError,
    _run_child,
    render,
    render_many,
    tojson,
)
from exaone_gguf.errors import InputError
from exaone_gguf.validate.template_check import CONVERSATIONS, conversations_for, render_source

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


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

# --- known renders (exaone-formats.md section 5) ------------------------------------------------


def test_exaone35_known_render():
    messages = [
        {"role": "system", "content": "You are EXAONE model from LG AI Research, a helpful assistant."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    expected = (
        "[|system|]You are EXAONE model from LG AI Research, a helpful assistant.[|endofturn|]\n"
        "[|user|]Hi\n[|assistant|]Hello![|endofturn|]\n[|user|]Bye\n[|assistant|]"
    )
    assert render(fixture_text(REAL["exaone3.5"]), messages) == expected
    # no system message: an empty system turn is inserted
    assert render(fixture_text(REAL["exaone3.5"]), messages[1:2]) == (
        "[|system|][|endofturn|]\n[|user|]Hi\n[|assistant|]"
    )


def test_exaone_deep_known_render():
    messages = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<thought>\nadding\n</thought>\n2"},
        {"role": "user", "content": "2+2?"},
    ]
    assert render(fixture_text(REAL["exaone-deep"]), messages) == (
        "[|system|][|endofturn|]\n[|user|]1+1?\n[|assistant|]2[|endofturn|]\n[|user|]2+2?\n[|assistant|]<thought>\n"
    )


def test_exaone4_known_renders():
    tmpl = fixture_text(REAL["exaone4"])
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain how wonderful you are"},
    ]
    head = (
        "[|system|]\nYou are a helpful assistant.[|endofturn|]\n"
        "[|user|]\nExplain how wonderful you are[|endofturn|]\n[|assistant|]\n"
    )
    assert render(tmpl, messages, enable_thinking=False) == head + "<think>\n\n</think>\n\n"
    assert render(tmpl, messages) == head + "<think>\n\n</think>\n\n"
    assert render(tmpl, messages, enable_thinking=True) == head + "<think>\n"

    conv = next(c for c in CONVERSATIONS if c.name == "tool_round_trip")
    out = render_source(tmpl, conv)
    assert (
        '[|assistant|]\n<think>\n\n</think>\n\n<tool_call>{"name": "roll_dice", "arguments": '
        '{"max_num": 6}}</tool_call>[|endofturn|]\n[|tool|]\n<tool_result>{"result": "4"}'
        "</tool_result>[|endofturn|]\n"
    ) in out
    assert out.startswith("[|system|]\n# Available Tools\n")


def test_exaone4_merges_consecutive_tool_results():
    conv = next(c for c in CONVERSATIONS if c.name == "parallel_tools_with_system")
    out = render_source(fixture_text(REAL["exaone4"]), conv)
    assert out.count("[|tool|]") == 1
    assert (
        '[|tool|]\n<tool_result>{"result": {"city": "서울", "temp_c": 21}}</tool_result>\n'
        '<tool_result>{"result": "부산: 맑음, 24°C"}</tool_result>[|endofturn|]\n'
    ) in out


def test_exaone4_unknown_role_is_a_template_error():
    with pytest.raises(TemplateError, match="Unknown role: narrator"):
        render(fixture_text(REAL["exaone4"]), [{"role": "narrator", "content": "x"}])
    with pytest.raises(TemplateError, match="Unknown role: narrator"):
        render(template_for("exaone4"), [{"role": "narrator", "content": "x"}])


# --- our templates render exactly like the real ones ---------------------------------------------


@pytest.mark.parametrize(
    "family, real",
    [
        ("exaone4", REAL["exaone4"]),
        ("exaone4-hybrid", REAL["exaone4"]),
        ("exaone3", REAL["exaone3.5"]),
        ("exaone3.5", REAL["exaone3.5"]),
        ("exaone-deep", REAL["exaone-deep"]),
    ],
)
@pytest.mark.slow
def test_our_template_renders_like_the_real_one(family, real):
    real_tmpl, ours = fixture_text(real), template_for(family)
    convs = conversations_for(real_tmpl)
    assert convs == conversations_for(ours)  # same markers -> same detected format
    if family.startswith("exaone4"):
        assert {"tool_round_trip", "parallel_tools_with_system", "thinking_on", "reasoning_kept"} <= {
            c.name for c in convs
        }
    for conv in convs:
        assert render_source(ours, conv) == render_source(real_tmpl, conv), conv.name


def test_exaone4_kept_reasoning_matches_including_quirk():
    # skip_think=false keeps the last turn's reasoning; both templates cut 9 chars after "<think>".
    real = fixture_text(REAL["exaone4"])
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>\nabc reasoning\n</think>\n\nanswer"},
    ]
    ours_out = render(template_for("exaone4"), messages, add_generation_prompt=False, skip_think=False)
    assert ours_out == render(real, messages, add_generation_prompt=False, skip_think=False)
    assert "<think>\nbc reasoning\n</think>\n\nanswer" in ours_out  # "\na" cut too


def test_template_markers_pick_the_llama_cpp_builtin_family():
    assert "[|tool|]" in template_for("exaone4")
    for t in (template_for("exaone3"), template_for("exaone-deep")):
        assert "[|tool|]" not in t
        assert all(m in t for m in ("[|system|]", "[|assistant|]", "[|endofturn|]"))


# --- transformers' semantics -------------------------------------------------------------------


@pytest.mark.slow
def test_matches_transformers_render_on_real_templates():
    from transformers.utils.chat_template_utils import render_jinja_template

    for rel in REAL.values():
        tmpl = fixture_text(rel)
        for conv in conversations_for(tmpl):
            [expected], _ = render_jinja_template(
                [conv.messages],
                tools=conv.tools,
                chat_template=tmpl,
                add_generation_prompt=conv.add_generation_prompt,
                bos_token="[BOS]",
                eos_token="[|endofturn|]",
                **conv.kwargs,
            )
            assert render_source(tmpl, conv) == expected, (rel, conv.name)


def test_tojson_like_transformers():
    assert tojson({"k": "서울"}) == '{"k": "서울"}'
    assert tojson({"b": 1, "a": [1, 2]}, indent=2, sort_keys=True) == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'
    assert tojson([1, 2], separators=(",", ":")) == "[1,2]"
    assert render("{{ x | tojson }}", [], x="<b>&") == '"<b>&"'  # no HTML escaping
    assert render("{{ x | tojson(ensure_ascii=True) }}", [], x="한") == '"\\ud55c"'


def test_helpers_and_variables():
    out = render(
        "{{ bos_token }}|{{ eos_token }}|{{ strftime_now('%Y') | length }}|{{ tools is none }}"
        "|{% for i in range(3) %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
        [],
    )
    assert out == "[BOS]|[|endofturn|]|4|True|02"
    assert render("{{ messages[0].reasoning_content }}", [{"role": "assistant", "thinking": "t"}]) == "t"
    assert render("a{% generation %}b{% endgeneration %}c", []) == "abc"
    assert (
        render("{{ raise_exception is defined }}{{ add_generation_prompt }}", [], add_generation_prompt=False)
        == "TrueFalse"
    )


def test_compiling_names_the_file():
    def compile_only(template: str, source_name: str) -> None:  # the child compiles, renders nothing
        _run_child(template, [], source_name, MAX_OUTPUT_CHARS, TIMEOUT_S)

    compile_only(fixture_text(REAL["exaone4"]), "chat_template.jinja")
    with pytest.raises(InputError, match=r"tokenizer_config\.json.*syntax error at line 2"):
        compile_only("ok\n{% if %}", "tokenizer_config.json")
    with pytest.raises(TemplateError, match="No filter named 'nosuchfilter'"):
        compile_only("{{ x | nosuchfilter }}", "t.jinja")


def test_template_error_is_input_error():
    assert issubclass(TemplateError, InputError)


# --- sandbox and bounds ------------------------------------------------------------------------

ESCAPES = {
    "class_mro": "{{ ''.__class__.__mro__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler_globals": "{{ cycler.__init__.__globals__ }}",
    "joiner_globals": "{{ joiner.__init__.__globals__['os'] }}",
    "list_append": "{% set x = [] %}{{ x.append(1) }}",
    "dict_update": "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "messages_mutation": "{{ messages.pop() }}",
    "namespace_dunder": "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "format_attr": "{{ '{0.__class__.__mro__}'.format('') }}",
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_sandbox_escape_raises(name):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(TemplateError) as err:
        render(ESCAPES[name], messages)
    assert "sandbox" in str(err.value) or "unsafe" in str(err.value)
    assert messages == [{"role": "user", "content": "hi"}]


RUNAWAY = {
    "string_multiplication": "{{ 'a' * 1000000000 }}",
    "chained_multiplication": "{% set n = 100000 %}{{ 'a' * n * n }}",
    "list_multiplication": "{{ ([1] * 100000) * 100000 }}",
    "power": "{{ 10 ** 100000000 }}",
    "int_squaring": "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "tilde_doubling": "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "plus_doubling": "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "huge_range": "{% for i in range(10000000) %}{% endfor %}",
    "output_flood": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "captured_flood": "{% set big = 'a' * 1000000 %}{% set x %}{% for i in range(1000) %}{{ big }}"
    "{% endfor %}{% endset %}{{ x | length }}",
    "str_center": "{{ 'a'.center(1000000000) }}",
    "filter_center": "{{ 'a' | center(1000000000) }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "format_nested_width": "{{ '{:>{w}}'.format(1, w=1000000000) }}",
    "percent_width": "{{ '%1000000000s' % 'a' }}",
    "filter_format": "{{ '%1000000000s' | format('a') }}",
    "str_replace": "{% set s = 'a' * 100000 %}{{ s.replace('a', s) }}",
    "filter_replace": "{% set s = 'a' * 100000 %}{{ s | replace('a', s) }}",
    "str_join": "{% set s = 'a' * 100000 %}{{ s.join(s) }}",
    "filter_indent": "{% set s = 'a\\n' * 100000 %}{{ s | indent(100000) }}",  # blank lines stay unindented
    "str_translate": "{% set s = 'a' * 100000 %}{{ s.translate({97: s}) }}",
    "str_expandtabs": "{% set s = '\\t' * 100000 %}{{ s.expandtabs(100000) }}",
    "tojson_indent": "{{ [[1]] | tojson(indent=100000000) }}",
    "lipsum": "{{ lipsum(100000000) }}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    # Paths the old per-operation size estimators did not model (issue 11): one C call that builds a huge
    # value from small ones, and many values that are each under any per-value cap.
    "string_of_big_list": "{% set big = 'x' * 1000000 %}{{ ([big] * 1000000) | string }}",
    "percent_of_big_list": "{% set big = 'x' * 1000000 %}{{ '%s' % ([big] * 1000000,) }}",
    "accumulated_values": "{% set big = 'x' * 999990 %}{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
    "{% set ns.l = ns.l + [big ~ i] %}{% endfor %}{{ ns.l | length }}",
}


@pytest.mark.parametrize("name", list(RUNAWAY))
@pytest.mark.slow
def test_runaway_template_raises(name):
    with pytest.raises(TemplateError, match="stopped"):
        render(RUNAWAY[name], [], timeout_s=3)  # the memory, output or time bound of the child process


@pytest.mark.parametrize("name", ["string_of_big_list", "accumulated_values"])
def test_memory_bound_stops_what_no_estimator_modelled(name):
    # Long enough a time bound that the memory bound is the one that fires.
    with pytest.raises(
        TemplateError,
        match=r"<template>: chat template was stopped at its memory bound of "
        r"256 MiB for one render; a chat template needs a few MiB",
    ):
        render(RUNAWAY[name], [], timeout_s=120)


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",  # no output
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}x{% endif %}{% endmacro %}{{ f(40) }}",
        "{{ 10 ** 100000000 }}",  # one long C call: a Python-level watchdog could not interrupt it
    ],
)
def test_endless_template_is_stopped_by_the_time_bound(template):
    with pytest.raises(TemplateError, match=r"ran longer than its time bound of 0.3 s and was stopped"):
        render(template, [], timeout_s=0.3)
    assert render("{{ 1 + 1 }}", []) == "2"  # the next render is not affected


def test_cpu_bound_backs_up_the_wall_clock():
    # RLIMIT_CPU kills the child even when the caller's wall clock would wait longer.
    with pytest.raises(TemplateError, match=r"used more than its CPU bound of 1 s and was stopped"):
        _run_child(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            [{}],
            "<template>",
            1000,
            timeout_s=60,
            cpu_s=1,
        )


def test_output_cap():
    with pytest.raises(TemplateError, match="output passed 100 characters"):
        render("{% for i in range(101) %}x{% endfor %}", [], max_output_chars=100)
    assert render("{% for i in range(100) %}x{% endfor %}", [], max_output_chars=100) == "x" * 100


def test_bounds_leave_normal_templates_alone():
    out = render(
        "{{ '-' * 80 }}{{ 'x'.center(9) }}{{ '%5s' % 'a' }}{{ '{:>4}'.format(7) }}"
        "{{ [1, 2] + [3] }}{{ 2 ** 10 }}{{ 'a' ~ 1 }}{{ 'ab' | replace('a', 'xy') }}"
        "{{ x | default(5000000) }}{{ ('y' * 3000000) | length }}",
        [],
    )
    assert out == "-" * 80 + "    x    " + "    a" + "   7" + "[1, 2, 3]1024a1xyb50000003000000"


def test_render_many_renders_a_batch_in_one_child_and_names_the_failure():
    calls = [{"messages": [{"role": "user", "content": c}]} for c in ("a", "b", "boom", "d")]
    tmpl = "{% if messages[0].content == 'boom' %}{{ raise_exception('no boom') }}{% endif %}{{ messages[0].content }}"
    assert render_many(tmpl, calls[:2] + calls[3:]) == ["a", "b", "d"]
    with pytest.raises(TemplateError, match="refused the conversation: no boom") as err:
        render_many(tmpl, calls, source_name="t.jinja")
    assert err.value.index == 2 and err.value.rendered == ["a", "b"]
    with pytest.raises(TemplateError, match="syntax error") as err:
        render_many("{% if %}", calls)
    assert err.value.index is None and err.value.rendered == []


def test_a_render_does_not_change_the_caller():
    messages = [{"role": "user", "content": "hi"}]
    before = resource.getrlimit(resource.RLIMIT_AS), resource.getrlimit(resource.RLIMIT_CPU)
    with pytest.raises(TemplateError, match="memory bound"):
        render(RUNAWAY["accumulated_values"], messages, timeout_s=120)
    assert (resource.getrlimit(resource.RLIMIT_AS), resource.getrlimit(resource.RLIMIT_CPU)) == before
    assert messages == [{"role": "user", "content": "hi"}]
