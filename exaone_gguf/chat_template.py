"""Render chat templates the way transformers does, in a sandbox, in a child process with hard bounds.

Chat templates come from files we did not write (tokenizer_config.json, GGUF metadata), so they are
untrusted code. CVE-2024-34359 was exactly this: a GGUF template rendered without a sandbox. We render
in jinja2's ImmutableSandboxedEnvironment (no attribute escapes, no mutation of lists/dicts) with the
same options and helpers transformers uses, and add what the sandbox lacks: bounds on memory and time.

The bounds are the operating system's, not estimates: templates are compiled and rendered in a child
process (one child per call; `render_many` renders a whole batch of conversations in one) that runs under
- RLIMIT_AS: at most MEMORY_BUDGET_BYTES of address space beyond what the child starts with;
- RLIMIT_CPU: about `timeout_s` seconds of CPU per conversation (plus one), a backstop;
- a wall-clock timeout of `timeout_s` per conversation, after which the parent kills the child;
- an output cap of `max_output_chars` per render (checked while streaming).
Whatever path a template takes to grow (a C call such as str() of a huge list, many values that are each
small), the child hits a limit and dies or raises; the caller gets a TemplateError (an InputError: exit 2)
with one sentence naming the template and the bound. Compiling happens in the child too: Jinja folds
constant expressions while compiling ('ab' * 900000000 is evaluated then). A child is a fork of the caller,
so it costs a few milliseconds plus the compile, not an interpreter start.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import resource
import signal
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from exaone_gguf.errors import InputError

MAX_OUTPUT_CHARS = 1_000_000
TIMEOUT_S = 5.0
MAX_TEMPLATE_CHARS = 1_000_000
# Address space a render may add to the child. A real chat template needs a few MiB; the output cap alone
# (1M characters, up to 4 bytes each, streamed in chunks and joined) needs about 16 MiB.
MEMORY_BUDGET_BYTES = 256 << 20


class TemplateError(InputError):
    """A chat template failed to compile or render, broke a sandbox rule, or ran past a bound.

    From render_many: `index` is the conversation that failed (None: the template itself, before any
    conversation) and `rendered` holds the texts of the conversations before it."""

    def __init__(self, message: str, index: int | None = None, rendered: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.index = index
        self.rendered = list(rendered)


class _OutputCap(Exception):
    """The rendered text passed max_output_chars."""


class _GenerationTags(jinja2.ext.Extension):
    """Accept HF's `{% generation %}...{% endgeneration %}` (assistant-mask markers) as a no-op."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' tojson: plain json.dumps, no HTML escaping, non-ASCII kept."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _raise_exception(message: Any) -> None:
    raise _TemplateRaised(str(message))


class _TemplateRaised(Exception):
    """The template called raise_exception(): its own message, passed on to the user."""


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, as transformers' does (no dunder smuggling)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Namespace's signature trick
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.sandbox.SecurityError(f"namespace attribute {name!r} starts with an underscore")


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTags],
    )
    env.filters["tojson"] = tojson
    env.globals["namespace"] = _Namespace
    return env


_ENV = _make_environment()


def parse(template: str) -> jinja2.nodes.Template:
    """The template's syntax tree, parsed by the sandboxed environment that compiles and renders it."""
    return _ENV.parse(template)


# transformers copies a message's reasoning, given under any of these names, to `reasoning_content`
# (the name templates read) and to `thinking` (gpt-oss templates).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _alias_reasoning(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        if isinstance(m, dict):
            reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
            if reasoning is not None:
                m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


@functools.lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


# ---------------------------------------------------------------------------------------------
# The child: compile, then render each conversation, sending one message per step to the parent.

_EXIT_MEMORY = 3  # the child ran out of its address space where it could not even report it
# The sentence tail for a template that names a private attribute (after "SOURCE: chat template ").
PRIVATE_TAIL = (
    "reaches for the private attribute {name!r}, a sandbox escape attempt; it was refused and nothing was executed."
)


def _limit_child(memory_budget: int, cpu_s: int) -> None:
    """Set the child's hard limits: address space (what it has now plus the budget), CPU seconds, no core."""

    def clamp(limit: int, new: int) -> int:
        _, hard = resource.getrlimit(limit)
        return new if hard == resource.RLIM_INFINITY else min(new, hard)

    try:  # the size in pages of the address space the child starts with (Linux; macOS does not enforce RLIMIT_AS)
        with open("/proc/self/statm") as f:
            start = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        start = None
    if start is not None:
        size = clamp(resource.RLIMIT_AS, start + memory_budget)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    cpu = clamp(resource.RLIMIT_CPU, cpu_s)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed render leaves no core file behind


def _short(text: object, limit: int = 300) -> str:
    """A message from template code (raise_exception, an error that quotes a value) cut to one line's worth."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _describe(e: BaseException, max_output_chars: int) -> str:
    """The failure as the tail of one sentence: '<source>: chat template ' + this."""
    if isinstance(e, jinja2.TemplateSyntaxError):
        return f"has a Jinja syntax error at line {e.lineno}: {_short(e.message)}; fix the template text."
    if isinstance(e, jinja2.sandbox.SecurityError):
        return f"tried to reach outside the sandbox ({_short(e)}); it was stopped and nothing was executed."
    if isinstance(e, _TemplateRaised):
        return f"refused the conversation: {_short(e)}."
    if isinstance(e, _OutputCap):
        return f"was stopped: its output passed {max_output_chars:,} characters; a chat prompt is far shorter."
    if isinstance(e, MemoryError):
        return _memory_sentence()
    if isinstance(e, (RecursionError, OverflowError)):
        return f"was stopped: {type(e).__name__}: {_short(e)}; fix the template."
    return f"failed to render: {type(e).__name__}: {_short(e)}."


def _memory_sentence() -> str:
    return (
        f"was stopped at its memory bound of {MEMORY_BUDGET_BYTES >> 20} MiB for one render; a chat "
        "template needs a few MiB, so find where it builds huge values and fix it."
    )


def _render_one(template: jinja2.Template, call: Mapping[str, Any], max_output_chars: int) -> str:
    call = dict(call)
    variables = dict(
        messages=_alias_reasoning(call.pop("messages", [])),
        tools=call.pop("tools", None),
        documents=call.pop("documents", None),
        add_generation_prompt=call.pop("add_generation_prompt", True),
        bos_token=call.pop("bos_token", "[BOS]"),
        eos_token=call.pop("eos_token", "[|endofturn|]"),
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        **call,
    )
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(**variables):
        size += len(chunk)
        if size > max_output_chars:
            raise _OutputCap()
        chunks.append(chunk)
    return "".join(chunks)


def private_name(template: str) -> str | None:
    """The first private attribute the template names anywhere (`x._y`, or a constant string starting
    with `__` such as attr('__class__')), even in a branch no conversation takes; None when there is none."""
    for node in parse(template).find_all((jinja2.nodes.Getattr, jinja2.nodes.Const)):
        name = node.attr if isinstance(node, jinja2.nodes.Getattr) else node.value
        if isinstance(name, str) and (
            name.startswith("_") if isinstance(node, jinja2.nodes.Getattr) else name.startswith("__")
        ):
            return name
    return None


def _child_main(
    conn: Any,
    template: str,
    calls: list[dict],
    max_output_chars: int,
    memory_budget: int,
    cpu_s: int,
    refuse_private: bool = False,
) -> None:
    """Runs in the child: ("ok", None) once compiled (and, with `refuse_private`, found free of private
    attribute names), ("ok", text) per conversation, or ("error", sentence tail)."""
    try:
        _limit_child(memory_budget, cpu_s)
        compiled = _compile(template)
        name = private_name(template) if refuse_private else None
        if name is not None:
            conn.send(("error", PRIVATE_TAIL.format(name=name)))
            return
        conn.send(("ok", None))
        for call in calls:
            conn.send(("ok", _render_one(compiled, call, max_output_chars)))
    except BaseException as e:  # noqa: BLE001 - every failure of untrusted template code is reported
        # Drop the frames (and the huge values they may hold) before building the report.
        traceback.clear_frames(e.__traceback__)
        e.__traceback__ = None
        try:
            conn.send(("error", _describe(e, max_output_chars)))
        except MemoryError:
            os._exit(_EXIT_MEMORY)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# The parent.


@functools.lru_cache(maxsize=1)
def _context() -> multiprocessing.context.BaseContext:
    """Children are forks of the caller: no interpreter start and no import, so a child costs a few ms.
    (multiprocessing's forkserver and spawn would re-run the caller's __main__ module in every child.) The
    child only compiles and renders Jinja and sends text down a pipe; it never touches the caller's threads,
    files or models, and leaves with os._exit."""
    return multiprocessing.get_context("fork")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _check_length(template: str, source_name: str) -> None:
    if not isinstance(template, str):
        raise TemplateError(f"{source_name}: chat template is not a string but {type(template).__name__}.")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(
            f"{source_name}: chat template has {len(template):,} characters, more "
            f"than the {MAX_TEMPLATE_CHARS:,} allowed."
        )


def _run_child(
    template: str,
    calls: list[dict],
    source_name: str,
    max_output_chars: int,
    timeout_s: float,
    cpu_s: int | None = None,
    refuse_private: bool = False,
) -> list[str]:
    """Compile `template` and render every call in one bounded child; TemplateError on the first failure.
    `cpu_s` (default: the wall-clock allowance of every step, plus one) is the child's CPU-time limit.
    `refuse_private`: refuse a template naming a private attribute (private_name) before rendering anything."""
    _check_length(template, source_name)
    where = f"{source_name}: chat template"
    if cpu_s is None:
        cpu_s = math.ceil(timeout_s * (len(calls) + 1)) + 1
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_child_main,
        args=(sender, template, calls, max_output_chars, MEMORY_BUDGET_BYTES, cpu_s, refuse_private),
        daemon=True,
    )
    child.start()
    sender.close()
    rendered: list[str] = []
    compiled = False

    def fail(sentence_tail: str) -> TemplateError:
        index = len(rendered) if compiled else None
        return TemplateError(f"{where} {sentence_tail}", index, rendered)

    try:
        while len(rendered) < len(calls) or not compiled:
            deadline = time.monotonic() + timeout_s  # each step (compile, one conversation) gets timeout_s
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                raise fail(
                    f"ran longer than its time bound of {timeout_s:g} s and was stopped; "
                    "it loops too long or never ends, fix the template."
                )
            try:
                status, value = receiver.recv()
            except EOFError:  # the child died without a word: a limit killed it, or it crashed
                child.join(timeout_s)
                code = child.exitcode
                if code == _EXIT_MEMORY:
                    raise fail(_memory_sentence()) from None
                if code is not None and -code in (signal.SIGXCPU, signal.SIGKILL):
                    raise fail(
                        f"used more than its CPU bound of {cpu_s} s and was stopped; it loops too long "
                        "or never ends, fix the template."
                    ) from None
                raise fail(
                    f"crashed the render process ({_signal_name(code) if code and code < 0 else code}) "
                    "and was stopped; fix the template."
                ) from None
            if status == "error":
                raise fail(value)
            if compiled:
                rendered.append(value)
            compiled = True
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
        child.close()
    return rendered


def check_and_render(template: str, messages: list[dict], source_name: str, *, timeout_s: float = TIMEOUT_S) -> str:
    """One bounded child that compiles `template`, refuses it if it names a private attribute anywhere (a
    sandbox escape attempt may sit in a branch no conversation takes; nothing is rendered then), and renders
    `messages` with render()'s defaults. Raises TemplateError naming `source_name`; returns the text."""
    call = dict(messages=messages, add_generation_prompt=True, tools=None, bos_token="[BOS]", eos_token="[|endofturn|]")
    return _run_child(template, [call], source_name, MAX_OUTPUT_CHARS, timeout_s, refuse_private=True)[0]


def render_many(
    template: str,
    calls: Sequence[Mapping[str, Any]],
    *,
    source_name: str = "<template>",
    max_output_chars: int = MAX_OUTPUT_CHARS,
    timeout_s: float = TIMEOUT_S,
) -> list[str]:
    """Render `template` once per call in one bounded child; each call is a dict of render()'s keyword
    arguments (messages, add_generation_prompt, tools, bos_token, eos_token, template variables).

    Returns the texts in order, or raises TemplateError for the first call that fails (its `index` and the
    texts `rendered` before it). Each call gets `timeout_s` of wall-clock time."""
    return _run_child(template, [dict(c) for c in calls], source_name, max_output_chars, timeout_s)


def render(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    tools: list[dict] | None = None,
    bos_token: str = "[BOS]",
    eos_token: str = "[|endofturn|]",
    source_name: str = "<template>",
    max_output_chars: int = MAX_OUTPUT_CHARS,
    timeout_s: float = TIMEOUT_S,
    **kwargs: Any,
) -> str:
    """Render a chat template with transformers' semantics, sandboxed and bounded (in a child process).

    Extra keyword arguments (enable_thinking, skip_think, ...) become template variables, as in
    transformers' apply_chat_template; like transformers, a message's reasoning given as `thinking` or
    `reasoning` is also offered as `reasoning_content`. Raises TemplateError on any failure.
    """
    call = dict(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        tools=tools,
        bos_token=bos_token,
        eos_token=eos_token,
        **kwargs,
    )
    return render_many(
        template, [call], source_name=source_name, max_output_chars=max_output_chars, timeout_s=timeout_s
    )[0]
