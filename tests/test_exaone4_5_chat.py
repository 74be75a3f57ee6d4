"""EXAONE 4.5's chat template: LG's chat_template.jinja (../shared/fixtures/exaone-4.5-33b) against the template
make-tiny ships (written for this project, families/exaone4_5.py) and the Ollama Modelfile's Go template.

- The project's template renders byte for byte LG's prompt on every conversation validate renders for 4.5 and on
  the corners LG's template has (vision ids, videos, string tool arguments, skip_think, reasoning after the last
  query, a `tool_declare` message, enable_thinking given as 1).
- The Go template renders the same prompt as LG's on the conversations Ollama's data can express; on the others the
  first difference is of a kind the Modelfile's comment names (GO_TEMPLATE_DIFFERENCES). The figures are printed.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import fixture_path
from gotemplate import render_go_template
from helpers import parse_modelfile, template_for

from exaone_gguf import chat_template
from exaone_gguf.families import chat_format_for, family_of_gguf_arch, family_of_template
from exaone_gguf.families.exaone4_5 import GO_TEMPLATE_DIFFERENCES
from exaone_gguf.publish.modelfile import FAMILIES, chat_family, render_modelfile
from exaone_gguf.validate.template_check import Conversation, conversations_for, template_format

OURS = template_for("exaone4.5")
GO = FAMILIES["exaone4_5"][0]


@pytest.fixture(scope="module")
def lg() -> str:
    return fixture_path("exaone-4.5-33b", "chat_template.jinja").read_text(encoding="utf-8")


def render(template: str, conv: Conversation) -> str:
    return chat_template.render(
        template,
        conv.messages,
        add_generation_prompt=conv.add_generation_prompt,
        tools=conv.tools,
        eos_token="<|endofturn|>",
        **conv.kwargs,
    )


def validate_conversations(lg: str) -> list[Conversation]:
    return conversations_for(lg)


_CALL = {"type": "function", "function": {"name": "roll_dice", "arguments": '{"max_num": 20}'}}
CORNERS = [
    Conversation(
        "vision_ids",
        [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "image"}, {"type": "text"}]}],
        frozenset(),
        kwargs={"add_vision_id": True},
    ),
    Conversation(
        "reasoning_after_the_last_query",
        [
            {"role": "tool_declare", "content": "declared"},
            {"role": "user", "content": "Roll"},
            {"role": "system", "content": "late system"},
            {"role": "assistant", "content": "<think>think hard</think>\n\n  Rolling.  ", "tool_calls": [_CALL]},
            {"role": "tool", "content": {"n": 17}},
            {"role": "tool", "content": "again"},
            {"role": "assistant", "content": None, "tool_calls": [{"name": "f", "parameters": {"a": "é"}}]},
        ],
        frozenset(),
        add_generation_prompt=False,
    ),
    Conversation(
        "skip_think",
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": " why "}],
        frozenset(),
        add_generation_prompt=False,
        kwargs={"skip_think": True},
    ),
    Conversation("thinking_as_1", [{"role": "user", "content": "q"}], frozenset(), kwargs={"enable_thinking": 1}),
    Conversation(
        "system_as_parts",
        [{"role": "system", "content": [{"type": "text", "text": "S"}]}, {"role": "tool", "content": "first"}],
        frozenset(),
    ),
]


def test_validate_renders_every_feature_for_4_5(lg):
    names = [c.name for c in validate_conversations(lg)]
    assert template_format(lg) == "exaone4_5" and len(names) == 15
    assert {"thinking_on", "thinking_off", "think_history", "tool_round_trip", "image", "image_follow_up"} <= set(names)


def test_make_tiny_template_renders_lg_prompts(lg):
    convs = validate_conversations(lg) + CORNERS
    calls = [
        dict(
            messages=c.messages,
            add_generation_prompt=c.add_generation_prompt,
            tools=c.tools,
            eos_token="<|endofturn|>",
            **c.kwargs,
        )
        for c in convs
    ]
    want = chat_template.render_many(lg, calls)
    got = chat_template.render_many(OURS, calls)
    assert [c.name for c, a, b in zip(convs, want, got) if a != b] == []


def test_both_refuse_an_unknown_role(lg):
    conv = Conversation("bad", [{"role": "robot", "content": "x"}], frozenset())
    for t in (lg, OURS):
        with pytest.raises(chat_template.TemplateError, match="Unknown role: robot"):
            render(t, conv)


def test_lg_prompt_examples(lg):
    """Two prompts spelled out: the image placeholder ends with a newline, past assistant turns keep an empty
    think block, reasoning is kept only after the last text question, tools come first in a tool_declare turn."""
    image = next(c for c in validate_conversations(lg) if c.name == "image")
    assert render(lg, image) == (
        "<|system|>\nYou are a helpful assistant.<|endofturn|>\n"
        "<|user|>\n<vision><|image_pad|></vision>\nWhat is in this picture?<|endofturn|>\n"
        "<|assistant|>\n<think>\n"
    )
    tools = next(c for c in validate_conversations(lg) if c.name == "tool_round_trip")
    text = render(lg, tools)
    assert text.startswith('<|tool_declare|>\n# Tools\n<tool>{"type": "function", "function": {"name": "roll_dice"')
    assert '<|assistant|>\n<think>\n\n</think>\n\n<tool_call>{"name": "roll_dice", "arguments": {"max_num": 6}}' in text
    assert "<|tool|>\n<tool_result>4</tool_result><|endofturn|>\n" in text
    assert "<|assistant|>\n<think>\n\n</think>\n\nYou rolled a 4.<|endofturn|>\n" in text


# ---- the Ollama Go template


def ollama_data(conv: Conversation) -> dict:
    """What Ollama hands a TEMPLATE for this conversation: messages with Role, Content (images as Ollama's
    "[img-N] " tags before the text), Thinking (reasoning_content, else the text before </think>, which Ollama's
    thinking parser separates, the answer's leading whitespace eaten), ToolCalls; Tools; Think / IsThinkSet."""
    msgs, img = [], 0
    for m in conv.messages:
        content, thinking = m.get("content"), m.get("reasoning_content") or ""
        if isinstance(content, list):
            n = sum(p["type"] == "image" for p in content)
            content = "".join(f"[img-{img + k}] " for k in range(n)) + "".join(p.get("text", "") for p in content)
            img += n
        elif content is not None and not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)  # a client sends tool results as text
        if m["role"] == "assistant" and content and "</think>" in content:
            head, _, content = content.rpartition("</think>")
            thinking, content = thinking or head.removeprefix("<think>").strip(), content.lstrip()
        calls = [c.get("function", c) for c in m.get("tool_calls") or []]
        msgs.append(
            {
                "Role": m["role"],
                "Content": content or "",
                "Thinking": thinking,
                "ToolCalls": [{"Function": {"Name": c["name"], "Arguments": c["arguments"]}} for c in calls],
            }
        )
    think = conv.kwargs.get("enable_thinking")
    return {"Messages": msgs, "Tools": conv.tools or [], "Think": bool(think), "IsThinkSet": think is not None}


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def kind_of_difference(jinja: str, go: str) -> str:
    """Which documented difference the first differing character falls in (the Modelfile's comment)."""
    i = first_difference(jinja, go)
    line = jinja[jinja.rfind("\n", 0, i) + 1 : jinja.find("\n", i)]
    if line.startswith("<tool>") or "<tool_call>" in line:
        return "json"
    if jinja[i:].startswith("<vision>") or go[i:].startswith("[img-"):
        return "image"
    if i < len(go) and go[i].isspace() and go[i:].lstrip().startswith(jinja[i : i + 10]):
        return "whitespace"
    return f"undocumented at char {i}: {jinja[max(0, i - 20) : i + 20]!r} vs {go[max(0, i - 20) : i + 20]!r}"


def without_documented_differences(text: str) -> str:
    """`text` with what GO_TEMPLATE_DIFFERENCES names taken out: JSON in one canonical form, image markers of
    either kind removed, whitespace around assistant text dropped."""

    def canonical(m: re.Match) -> str:
        return m.group(1) + json.dumps(json.loads(m.group(2)), sort_keys=True) + m.group(3)

    text = re.sub(r"(<tool>)(.*?)(</tool>)", canonical, text)
    text = re.sub(r'("arguments": )(.*?)(}</tool_call>)', canonical, text)
    text = re.sub(r"<vision><\|image_pad\|></vision>\n|\[img-\d+\] ", "", text)
    return re.sub(r"\s+<\|endofturn\|>", "<|endofturn|>", re.sub(r"</think>\n\n\s+", "</think>\n\n", text))


# validate's conversation -> the kind of its first difference (None: the same prompt)
EXPECTED = {
    "system_single_turn": None,
    "no_system": None,
    "multi_turn": None,
    "korean": None,
    "surrounding_whitespace": "whitespace",
    "no_generation_prompt": None,
    "thought_history": None,
    "thinking_on": None,
    "thinking_off": None,
    "think_history": None,
    "reasoning_kept": None,
    "tool_round_trip": "json",
    "parallel_tools_with_system": "json",
    "image": "image",
    "image_follow_up": "image",
}


@pytest.mark.slow
def test_go_template_parity_with_lg_template(lg):
    convs = validate_conversations(lg)
    assert [c.name for c in convs] == list(EXPECTED)
    got = {}
    for c in convs:
        jinja, go = render(lg, c), render_go_template(GO, ollama_data(c))
        got[c.name] = None if jinja == go else kind_of_difference(jinja, go)
        assert without_documented_differences(jinja) == without_documented_differences(go), c.name
        where = "identical" if jinja == go else f"{got[c.name]}: {jinja[first_difference(jinja, go) :][:40]!r}"
        print(f"exaone4.5 Go vs Jinja, {c.name}: {where}")
    same = sum(v is None for v in got.values())
    print(f"exaone4.5 Go template: {same}/{len(convs)} of validate's conversations render LG's prompt")
    assert got == EXPECTED


def test_modelfile_says_where_it_differs():
    text = render_modelfile("M-Q4_K_M.gguf", "exaone4_5")
    comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for word in ("compact JSON", "surrounding", "whitespace", "[img-N]", "<vision><|image_pad|></vision>"):
        assert word in comment and word in GO_TEMPLATE_DIFFERENCES
    assert parse_modelfile(text)["TEMPLATE"] == GO


def test_a_broken_go_template_is_caught(lg):
    conv = next(c for c in validate_conversations(lg) if c.name == "multi_turn")
    broken = GO.replace("</think>", "</thought>")
    assert render_go_template(broken, ollama_data(conv)) != render(lg, conv)
    thinking = next(c for c in validate_conversations(lg) if c.name == "reasoning_kept")
    no_history = GO.replace("{{ $m.Thinking }}", "")  # reasoning of the turns after the last query lost
    assert render_go_template(no_history, ollama_data(thinking)) != render(lg, thinking)


# ---- registry and Modelfile


def test_registry_tells_exaone4_5_from_k_exaone_and_exaone4(lg):
    for t in (lg, OURS):
        assert family_of_template(t).name == "exaone4_5" and template_format(t) == "exaone4_5"
        assert chat_format_for("exaone4", t).name == "exaone4_5"
    assert family_of_gguf_arch("exaone4", "exaone-moe").name == "exaone4_5"
    assert family_of_gguf_arch("exaone4", "exaone4").name == "exaone4"
    assert family_of_gguf_arch("exaone4").name == "exaone4"
    assert chat_family("exaone4", None) == "exaone4"


def test_modelfile_with_projector_and_card_note():
    text = render_modelfile("M-Q4_K_M.gguf", "exaone4_5", projector="mmproj-M-F16.gguf")
    mf = parse_modelfile(text)
    assert mf["FROMS"] == ["./M-Q4_K_M.gguf", "./mmproj-M-F16.gguf"] and mf["FROM"] == "./M-Q4_K_M.gguf"
    assert ("stop", '"<|endofturn|>"') in mf["PARAMETER"] and ("temperature", "1.0") in mf["PARAMETER"]
    assert parse_modelfile(render_modelfile("M.gguf", "exaone4_5"))["FROMS"] == ["./M.gguf"]
    note = chat_format_for("exaone4", OURS).card_note
    assert "enable_thinking" in note and "--mmproj" in note and "--no-mtp" in note
