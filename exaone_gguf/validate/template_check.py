"""Does the GGUF's chat template produce the prompts the source model was trained on?

Three renderers are compared on a fixed set of conversations:
- `render_source`: our sandboxed renderer with transformers' semantics (what HF users get);
- `render_llama_cpp`: llama-cpp-python's own Jinja2ChatFormatter (what its chat API sends);
- `render_builtin`: llama.cpp's non-Jinja `llama_chat_apply_template`, which pattern-matches the
  template to a built-in format (what llama.cpp tools use without --jinja). EXAONE 4's built-in
  format is known to differ from the official one, so this path only warns.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from exaone_gguf import chat_template
from exaone_gguf.families import family_of_template
from exaone_gguf.validate.results import CheckResult

# What a conversation needs of a template. A template's family (and so its features) is decided from its
# markers the way llama.cpp's detector does (each family's Chat declares them); a template of no family
# ("other": Llama-family models such as KULLM3) gets the conversations that need nothing.
OTHER = "other"
_ALL: frozenset[str] = frozenset()
_EXAONE = frozenset({"role_markers"})  # [|role|] turns
_ONLY4 = frozenset({"role_markers", "reasoning_tools"})  # <think> reasoning, tools and tool calls
_IMAGES = frozenset({"images"})  # image parts in a message's content (EXAONE 4.5)


@dataclass(frozen=True)
class Conversation:
    name: str
    messages: list[dict]
    needs: frozenset[str]  # template features (families.Chat.features) the conversation exercises
    add_generation_prompt: bool = True
    tools: list[dict] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra template variables


_SYSTEM = "You are EXAONE model from LG AI Research, a helpful assistant."
_DICE_TOOL = {
    "type": "function",
    "function": {
        "name": "roll_dice",
        "description": "Roll a dice with the given number of faces.",
        "parameters": {
            "type": "object",
            "properties": {"max_num": {"type": "integer", "description": "number of faces"}},
            "required": ["max_num"],
        },
    },
}
_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "현재 날씨를 조회합니다.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "도시 이름"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation(
        "system_single_turn",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Explain how wonderful you are"},
        ],
        _ALL,
    ),
    Conversation("no_system", [{"role": "user", "content": "Hi"}], _ALL),
    Conversation(
        "multi_turn",
        [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        _ALL,
    ),
    Conversation(
        "korean",
        [
            {"role": "system", "content": "당신은 LG AI Research의 EXAONE 모델입니다."},
            {"role": "user", "content": "안녕하세요! 한국의 수도는 어디인가요?"},
            {"role": "assistant", "content": "대한민국의 수도는 서울입니다."},
            {"role": "user", "content": "감사합니다. 날씨는 어때요?"},
        ],
        _ALL,
    ),
    # llama.cpp's test-chat-template conversation: the built-in formats trim contents, Jinja does not.
    Conversation(
        "surrounding_whitespace",
        [
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": "Who are you"},
            {"role": "assistant", "content": "   I am an assistant   "},
            {"role": "user", "content": "  Another question \n"},
        ],
        _ALL,
    ),
    Conversation(
        "no_generation_prompt",
        [
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"},
        ],
        _ALL,
        add_generation_prompt=False,
    ),
    # Past reasoning: EXAONE Deep drops it from history, 3.5 keeps the text as is.
    Conversation(
        "thought_history",
        [
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "<thought>\nOne plus one.\n</thought>\n2"},
            {"role": "user", "content": "2+2?"},
        ],
        _EXAONE,
    ),
    Conversation(
        "thinking_on",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Explain how wonderful you are"},
        ],
        _ONLY4,
        kwargs={"enable_thinking": True},
    ),
    Conversation(
        "thinking_off",
        [
            {"role": "user", "content": "Explain how wonderful you are"},
        ],
        _ONLY4,
        kwargs={"enable_thinking": False},
    ),
    Conversation(
        "think_history",
        [
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "<think>\nOne plus one.\n</think>\n\n2"},
            {"role": "user", "content": "2+2?"},
        ],
        _ONLY4,
        kwargs={"enable_thinking": True},
    ),
    Conversation(
        "reasoning_kept",
        [
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2", "reasoning_content": "One plus one is two."},
        ],
        _ONLY4,
        add_generation_prompt=False,
        kwargs={"skip_think": False},
    ),
    Conversation(
        "tool_round_trip",
        [
            {"role": "user", "content": "Roll a 6-sided dice."},
            {
                "role": "assistant",
                "tool_calls": [
                    {"type": "function", "function": {"name": "roll_dice", "arguments": {"max_num": 6}}},
                ],
            },
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "You rolled a 4."},
            {"role": "user", "content": "Again, please."},
        ],
        _ONLY4,
        tools=[_DICE_TOOL],
    ),
    Conversation(
        "parallel_tools_with_system",
        [
            {"role": "system", "content": "도구를 사용할 수 있는 비서입니다."},
            {"role": "user", "content": "서울과 부산의 날씨를 알려 주세요."},
            {
                "role": "assistant",
                "content": "두 도시를 조회하겠습니다.",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "서울"}}},
                    {"name": "get_weather", "arguments": {"city": "부산"}},
                ],
            },
            {"role": "tool", "content": {"city": "서울", "temp_c": 21}},
            {"role": "tool", "content": "부산: 맑음, 24°C"},
        ],
        _ONLY4,
        tools=[_WEATHER_TOOL, _DICE_TOOL],
        kwargs={"enable_thinking": False},
    ),
    Conversation(
        "image",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]},
        ],
        _IMAGES,
    ),
    # an image turn is no text query: the reasoning after it is dropped once a text question follows
    Conversation(
        "image_follow_up",
        [
            {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "image"}]},
            {"role": "assistant", "content": "Two cats.", "reasoning_content": "Both show a cat."},
            {"role": "user", "content": "Which is older?"},
        ],
        _IMAGES,
        kwargs={"enable_thinking": False},
    ),
)


def template_format(template: str) -> str:
    """The name of the chat family whose markers the template has (llama.cpp's detection), or OTHER."""
    fam = family_of_template(template)
    return fam.chat.name if fam is not None else OTHER


def conversations_for(template: str) -> list[Conversation]:
    fam = family_of_template(template)
    features = fam.chat.features if fam is not None else frozenset()
    return [c for c in CONVERSATIONS if c.needs <= features]


def render_source(
    template: str, conv: Conversation, bos: str = "[BOS]", eos: str = "[|endofturn|]", source_name: str = "<template>"
) -> str:
    """Our sandboxed render, transformers' semantics."""
    return chat_template.render(
        template,
        conv.messages,
        add_generation_prompt=conv.add_generation_prompt,
        tools=conv.tools,
        bos_token=bos,
        eos_token=eos,
        source_name=source_name,
        **conv.kwargs,
    )


def render_llama_cpp(template: str, conv: Conversation, bos: str, eos: str) -> str:
    """llama-cpp-python's Jinja2ChatFormatter. It forwards extra keyword arguments (enable_thinking,
    skip_think) and `tools` to the template; add_generation_prompt is fixed per formatter. It also
    defines functions/function_call/tool_choice as None, which transformers does not."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template, eos_token=eos, bos_token=bos, add_generation_prompt=conv.add_generation_prompt
    )
    return formatter(messages=conv.messages, tools=conv.tools, **conv.kwargs).prompt


def _apply_builtin(template: str, messages: list[tuple[str, str]], add_ass: bool) -> str | None:
    """llama.cpp's llama_chat_apply_template; None when llama.cpp does not recognise `template`."""
    from llama_cpp import llama_cpp as lib

    keep = [(role.encode(), content.encode()) for role, content in messages]  # alive during the call
    chat = (lib.llama_chat_message * max(len(keep), 1))()
    for i, (role, content) in enumerate(keep):
        chat[i].role, chat[i].content = role, content
    tmpl = template.encode()
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(tmpl, chat, len(keep), add_ass, buf, size)
        if n < 0:
            return None
        if n <= size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n


def render_builtin(template: str, conv: Conversation) -> str | None:
    """The non-Jinja path: roles and plain contents only (no tools, no template variables)."""
    messages = [(m["role"], m.get("content") if isinstance(m.get("content"), str) else "") for m in conv.messages]
    return _apply_builtin(template, messages, conv.add_generation_prompt)


@lru_cache(maxsize=1)
def builtin_template_names() -> tuple[str, ...]:
    from llama_cpp import llama_cpp as lib

    count = lib.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * count)()
    lib.llama_chat_builtin_templates(names, count)
    return tuple(n.decode() for n in names)


# A conversation that tells the built-in formats apart: every role, distinct padded contents.
_PROBE = [("system", " sys "), ("user", " u1 "), ("assistant", " a1 "), ("tool", " t1 "), ("user", " u2 ")]


def detect_builtin(template: str) -> str | None:
    """The built-in format llama.cpp picks for `template` (None if it recognises none).

    llama.cpp does not export its detector, so we render a probe conversation with the template and
    with each built-in name, and return the first name whose output is identical."""
    target = _apply_builtin(template, _PROBE, True)
    if target is None:
        return None
    for name in builtin_template_names():
        if _apply_builtin(name, _PROBE, True) == target:
            return name
    return None


def first_difference(expected: str, got: str, context: int = 30) -> str:
    """A short snippet around the first character where two renders differ."""
    i = next((k for k, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    lo = max(i - context, 0)
    return f"at char {i}: expected {expected[lo : i + context]!r}, got {got[lo : i + context]!r}"


def _llama_cpp_available() -> bool:
    try:
        import llama_cpp.llama_chat_format  # noqa: F401
    except ImportError:
        return False
    return True


def render_all(
    template: str, convs: list[Conversation], bos: str, eos: str, name: str
) -> tuple[dict[str, str], str | None]:
    """Renders by conversation name, and the first error (None if all rendered). One bounded child renders
    them all."""
    calls = [
        dict(
            messages=c.messages,
            add_generation_prompt=c.add_generation_prompt,
            tools=c.tools,
            bos_token=bos,
            eos_token=eos,
            **c.kwargs,
        )
        for c in convs
    ]
    try:
        texts = chat_template.render_many(template, calls, source_name=name)
    except chat_template.TemplateError as e:
        failed = convs[e.index if e.index is not None else 0]
        return dict(zip((c.name for c in convs), e.rendered)), f"conversation '{failed.name}': {e}"
    return dict(zip((c.name for c in convs), texts)), None


def check_templates(
    source_template: str | None,
    gguf_template: str | None,
    bos: str,
    eos: str,
    source_tokens: tuple[str, str] | None = None,
) -> list[CheckResult]:
    """Compare the GGUF's chat template with the source's on every applicable conversation. The GGUF's template
    is rendered with the GGUF's BOS / EOS strings `bos`, `eos`; the source's with the source's own
    (`source_tokens`, default the GGUF's), so a file whose EOS differs from the source's renders differently
    where the template writes it."""
    results: list[CheckResult] = []
    source_template = source_template or None
    gguf_template = gguf_template or None

    if gguf_template is None:
        if source_template is None:
            results.append(
                CheckResult("chat_template.present", "warn", "neither the GGUF nor the source has a chat template")
            )
        else:
            results.append(
                CheckResult(
                    "chat_template.present",
                    "fail",
                    "the source has a chat template but the GGUF has no tokenizer.chat_template",
                )
            )
        return results
    results.append(CheckResult("chat_template.present", "pass", f"{len(gguf_template)} characters"))

    # The reference decides which conversations apply: the source when we have it.
    reference = source_template or gguf_template
    convs = conversations_for(reference)
    names = [c.name for c in convs]

    gguf_renders, gguf_error = render_all(gguf_template, convs, bos, eos, "GGUF template")
    if gguf_error:
        results.append(CheckResult("chat_template.renders", "fail", gguf_error, {"conversations": names}))
    else:
        results.append(
            CheckResult(
                "chat_template.renders",
                "pass",
                f"{len(convs)} conversations ({template_format(reference)} format)",
                {"conversations": names},
            )
        )

    expected = gguf_renders
    if source_template is None:
        results.append(CheckResult("chat_template.matches_source", "skip", "no source template given"))
    else:
        expected, source_error = render_all(source_template, convs, *(source_tokens or (bos, eos)), "source template")
        if source_error:
            results.append(CheckResult("chat_template.matches_source", "fail", source_error))
        elif gguf_error:
            results.append(
                CheckResult(
                    "chat_template.matches_source", "fail", "the GGUF template does not render every conversation"
                )
            )
        else:
            diffs = [c.name for c in convs if gguf_renders[c.name] != expected[c.name]]
            if diffs:
                first = diffs[0]
                results.append(
                    CheckResult(
                        "chat_template.matches_source",
                        "fail",
                        f"'{first}' renders differently {first_difference(expected[first], gguf_renders[first])}"
                        + (f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""),
                        {"differs_on": diffs, "template_text_identical": False},
                    )
                )
            else:
                results.append(
                    CheckResult(
                        "chat_template.matches_source",
                        "pass",
                        f"identical renders on {len(convs)} conversations",
                        {"template_text_identical": source_template == gguf_template},
                    )
                )

    if gguf_error or len(expected) != len(convs):
        return results  # the remaining checks need every conversation rendered
    if not _llama_cpp_available():
        results.append(CheckResult("chat_template.llama_cpp_python", "skip", "llama_cpp is not installed"))
        results.append(CheckResult("chat_template.builtin", "skip", "llama_cpp is not installed"))
        return results

    # llama-cpp-python renders the GGUF template unbounded, so only after ours rendered it safely.
    diffs, first_detail = [], ""
    for conv in convs:
        err = ""
        try:
            got = render_llama_cpp(gguf_template, conv, bos, eos)
        except Exception as e:  # noqa: BLE001 - any failure there is a finding
            got, err = None, f"{type(e).__name__}: {e}"
        if got != expected[conv.name]:
            diffs.append(conv.name)
            if not first_detail:
                first_detail = f"'{conv.name}': " + (err if got is None else first_difference(expected[conv.name], got))
    if diffs:
        results.append(
            CheckResult(
                "chat_template.llama_cpp_python",
                "fail",
                f"llama-cpp-python's formatter differs on {len(diffs)}/{len(convs)} "
                f"conversations, first {first_detail}",
                {"differs_on": diffs},
            )
        )
    else:
        results.append(
            CheckResult(
                "chat_template.llama_cpp_python", "pass", f"Jinja2ChatFormatter matches on {len(convs)} conversations"
            )
        )

    detected = detect_builtin(gguf_template)
    diffs = []
    for conv in convs:
        if render_builtin(gguf_template, conv) != expected[conv.name]:
            diffs.append(conv.name)
    data = {"detected": detected, "differs_on": diffs}
    if detected is None:
        results.append(
            CheckResult(
                "chat_template.builtin",
                "warn",
                "llama.cpp's non-Jinja path recognises no built-in format for this template; use --jinja",
                data,
            )
        )
    elif diffs:
        results.append(
            CheckResult(
                "chat_template.builtin",
                "warn",
                f"without --jinja llama.cpp uses its built-in '{detected}' format, "
                f"which differs on {len(diffs)}/{len(convs)} conversations "
                f"(first: '{diffs[0]}'); use --jinja",
                data,
            )
        )
    else:
        results.append(
            CheckResult(
                "chat_template.builtin",
                "pass",
                f"built-in '{detected}' format matches on {len(convs)} conversations",
                data,
            )
        )
    return results
