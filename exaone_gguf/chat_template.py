"""Render chat templates the way transformers does, safely and within bounds.

Chat templates come from files we did not write (tokenizer_config.json, GGUF metadata), so they are
untrusted code. CVE-2024-34359 was exactly this: a GGUF template rendered without a sandbox. We render
in jinja2's ImmutableSandboxedEnvironment (no attribute escapes, no mutation of lists/dicts) with the
same options and helpers transformers uses, and add what the sandbox lacks: bounds on time and size.

Bounds (each failure is a TemplateError, a subclass of InputError):
- time: a watchdog interrupts the rendering thread after `timeout_s` (pure-Python loops included, also
  loops that write nothing);
- output: the rendered text is streamed and stopped once it passes `max_output_chars`;
- values: the operators and calls that can grow a value faster than the output (`*`, `**`, `+`, `%`,
  `~`, str methods such as center/replace/join/format, filters such as center/indent/replace/format,
  tojson's indent, lipsum, strftime widths) are checked before they run, and every call's result is
  checked after, against the same size cap.
"""

from __future__ import annotations

import ctypes
import functools
import json
import re
import string
import threading
from datetime import datetime
from typing import Any, Callable

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from exaone_gguf.errors import InputError

MAX_OUTPUT_CHARS = 1_000_000
TIMEOUT_S = 5.0
MAX_TEMPLATE_CHARS = 1_000_000
# The largest string/list any single operation in a template may build. A value larger than the
# whole allowed output has no use in a chat prompt.
MAX_VALUE_LEN = MAX_OUTPUT_CHARS
MAX_INT_BITS = 1 << 16  # integers beyond this only serve to burn CPU inside one C call
MAX_JSON_INDENT = 64
MAX_LIPSUM_PARAGRAPHS = 100


class TemplateError(InputError):
    """A chat template failed to compile or render, broke a sandbox rule, or ran past a bound."""


class _LimitExceeded(Exception):
    """Raised inside the render when a value or the output grows past a cap."""


class _RenderTimeout(BaseException):
    """Injected into the rendering thread by the watchdog. BaseException so no `except Exception`
    inside jinja2 can swallow it."""


def _too_big(what: str, size: int, cap: int = MAX_VALUE_LEN) -> None:
    if size > cap:
        raise _LimitExceeded(f"{what} would reach size {size:,}, over the cap of {cap:,}")


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        _too_big(what, len(value))
    return value


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_LEN:
        raise _LimitExceeded(f"{what} got the integer {value} (cap {MAX_VALUE_LEN:,})")


# printf-style widths/precisions ("%9999s", "%.9999f") and str.format specs ("{:>9999}")
_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d*))?")
_SPEC_NUMBERS = re.compile(r"\d+")


def _percent_estimate(fmt: str, args: Any) -> int:
    items = args if isinstance(args, tuple) else (args,)
    widest_arg = max((len(str(a)) for a in items if isinstance(a, (str, bytes))), default=32)
    for a in items:
        _check_int(a, "'%' formatting")
    widths = [int(w or 0) + int(p or 0) for w, p in _PERCENT_WIDTH.findall(fmt)]
    for w in widths:
        _too_big("a '%' format width", w)
    return len(fmt) + sum(widths) + len(widths) * widest_arg


def _format_estimate(fmt: str, args: tuple, kwargs: dict) -> int:
    values = list(args) + list(kwargs.values())
    for v in values:
        _check_int(v, "str.format")
    widest_arg = max((len(str(v)) for v in values if isinstance(v, (str, bytes))), default=32)
    widest_int = max((abs(v) for v in values if isinstance(v, int)), default=0)
    total = len(fmt)
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return total  # malformed; str.format itself will raise
    for _, field, spec, _ in fields:
        if field is None:
            continue
        spec = spec or ""
        width = max((int(n) for n in _SPEC_NUMBERS.findall(spec)), default=0)
        if "{" in spec:
            width = max(width, widest_int)
        _too_big("a str.format width", width)
        total += width + widest_arg
    return total


def _str_method_estimate(name: str, owner: str | bytes, args: tuple, kwargs: dict) -> int | None:
    """Upper bound on the length a str/bytes method returns, for the methods that can grow."""
    n = len(owner)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return max(n, width) if isinstance(width, int) else n
    if name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        return n + owner.count("\t" if isinstance(owner, str) else b"\t") * max(int(size), 0)
    if name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        hits = owner.count(old) if len(old) else n + 1
        return n + hits * max(len(new) - len(old), 0)
    if name == "join" and args and isinstance(args[0], (list, tuple, str)):
        parts = args[0]
        return sum(len(p) if isinstance(p, (str, bytes)) else 0 for p in parts) + n * max(len(parts) - 1, 0)
    if name in ("format", "format_map") and isinstance(owner, str):
        mapping = args[0] if name == "format_map" and args and isinstance(args[0], dict) else None
        return _format_estimate(owner, () if mapping is not None else args, mapping or kwargs)
    if name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        return n * max(longest, 1)
    return None


class _BoundedCodeGenerator(CodeGenerator):
    """Routes the `~` operator through the environment so its result size is checked."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GenerationTags(jinja2.ext.Extension):
    """Accept HF's `{% generation %}...{% endgeneration %}` (assistant-mask markers) as a no-op."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sized = (str, bytes, list, tuple)
        if operator == "*":
            if isinstance(left, int) and isinstance(right, sized):
                left, right = right, left
            if isinstance(left, sized) and isinstance(right, int):
                _too_big("'*' on a sequence", len(left) * max(right, 0))
            elif isinstance(left, int) and isinstance(right, int):
                _too_big("'*' on integers", left.bit_length() + right.bit_length(), MAX_INT_BITS)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                _too_big("'**'", max(left.bit_length(), 1) * right, MAX_INT_BITS)
        elif operator == "+":
            if isinstance(left, sized) and isinstance(right, sized):
                _too_big("'+'", len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _too_big("'%' formatting", _percent_estimate(left, right))
        return _check_size(super().call_binop(context, operator, left, right), f"'{operator}'")

    def concat(self, parts: Any) -> str:  # type: ignore[override]
        # Compiled templates join captured output (macro bodies, {% set %} blocks, filter blocks)
        # with environment.concat; check the total before joining.
        parts = list(parts)
        _too_big("captured template output", sum(len(p) for p in parts))
        return "".join(parts)

    def bounded_concat(self, parts: tuple) -> str:
        texts = [str(p) for p in parts]
        _too_big("'~'", sum(len(t) for t in texts))
        return "".join(texts)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, (str, bytes)):
            for a in list(args) + list(kwargs.values()):
                _check_int(a, f"str.{name}()")
            estimate = _str_method_estimate(name, owner, args, kwargs)
            if estimate is not None:
                _too_big(f"str.{name}()", estimate)
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_size(result, f"the call to {name or 'a function'}")


# Extra bounds for built-in filters that can grow their input: name -> estimate(value, args, kwargs)
def _indent_estimate(value: Any, args: tuple, kwargs: dict) -> int:
    width = args[0] if args else kwargs.get("width", 4)
    per_line = len(width) if isinstance(width, str) else int(width)
    text = str(value)
    return len(text) + (text.count("\n") + 1) * per_line


_FILTER_ESTIMATES: dict[str, Callable[[Any, tuple, dict], int]] = {
    "center": lambda v, a, k: max(len(str(v)), int(a[0] if a else k.get("width", 80))),
    "indent": _indent_estimate,
    "replace": lambda v, a, k: _str_method_estimate("replace", str(v), a[:2], {}) or 0,
    "join": lambda v, a, k: (
        _str_method_estimate("join", str(a[0] if a else k.get("d", "")), ([str(x) for x in v],), {}) or 0
        if isinstance(v, (list, tuple))
        else 0
    ),
    "format": lambda v, a, k: _percent_estimate(str(v), tuple(a) or k),
}


# Filters whose integer arguments are sizes, widths or counts (not values like default(5000000)).
_SIZE_ARG_FILTERS = {"center", "indent", "wordwrap", "truncate", "batch", "slice", "format", "replace",
                     "tojson", "join"}


def _bounded_filter(name: str, func: Callable) -> Callable:
    # Filters receive (context|eval_ctx|environment)? then the value, then their arguments.
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1
    estimate = _FILTER_ESTIMATES.get(name)
    check_ints = name in _SIZE_ARG_FILTERS

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value, extra = (args[skip - 1] if len(args) >= skip else None), args[skip:]
        for a in list(extra) + list(kwargs.values()) if check_ints else ():
            _check_int(a, f"the '{name}' filter")
        if estimate is not None and len(args) >= skip:
            _too_big(f"the '{name}' filter", estimate(value, extra, kwargs))
        return _check_size(func(*args, **kwargs), f"the '{name}' filter")

    return wrapper


def tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None,
           separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' tojson: plain json.dumps, no HTML escaping, non-ASCII kept."""
    if indent is not None and (len(indent) if isinstance(indent, str) else indent) > MAX_JSON_INDENT:
        raise _LimitExceeded(f"tojson indent {indent!r} is larger than {MAX_JSON_INDENT}")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    if re.search(r"%[-_0^#]*\d", fmt):
        raise _LimitExceeded(f"strftime_now does not accept field widths ({fmt!r})")
    return datetime.now().strftime(fmt)


def _lipsum(n: int = 5, *args: Any, **kwargs: Any) -> str:
    _too_big("lipsum()", n, MAX_LIPSUM_PARAGRAPHS)
    return generate_lorem_ipsum(n, *args, **kwargs)


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


def _make_environment() -> _BoundedSandbox:
    env = _BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTags],
    )
    env.filters["tojson"] = tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.globals["lipsum"] = _lipsum
    env.globals["namespace"] = _Namespace
    return env


_ENV = _make_environment()


def parse(template: str) -> jinja2.nodes.Template:
    """The template's syntax tree, parsed by the sandboxed environment that compiles and renders it."""
    return _ENV.parse(template)


# ---------------------------------------------------------------------------------------------
# The watchdog: interrupt the rendering thread when it runs too long.

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int


class _Watchdog:
    """Raises _RenderTimeout in the calling thread after `seconds`, unless stopped first."""

    def __init__(self, seconds: float) -> None:
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._active = True
        self._fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            if self._active:
                self._fired = True
                _set_async_exc(self._thread_id, _RenderTimeout)

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        with self._lock:
            self._active = False
            fired = self._fired
        if fired:  # clear an exception that was set but not yet delivered
            _set_async_exc(self._thread_id, ctypes.py_object())  # NULL clears


# ---------------------------------------------------------------------------------------------

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


def _run_bounded(source_name: str, timeout_s: float, work: Callable[[], Any]) -> Any:
    """Run `work` under the watchdog and turn every failure into a TemplateError."""
    where = f"{source_name}: chat template"
    try:
        # A _RenderTimeout delivered late, while leaving the watchdog, still lands in this try.
        with _Watchdog(timeout_s):
            return work()
    except _RenderTimeout:
        raise TemplateError(f"{where} ran longer than {timeout_s:g} s and was stopped; "
                            "it loops too long or never ends.") from None
    except TemplateError:
        raise
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{where} has a Jinja syntax error at line {e.lineno}: {e.message}; "
                            "fix the template text.") from None
    except jinja2.sandbox.SecurityError as e:
        raise TemplateError(f"{where} tried to reach outside the sandbox ({e}); it was stopped "
                            "and nothing was executed.") from None
    except _TemplateRaised as e:
        raise TemplateError(f"{where} refused the conversation: {e}.") from None
    except _LimitExceeded as e:
        raise TemplateError(f"{where} was stopped: {e}.") from None
    except (MemoryError, RecursionError, OverflowError) as e:
        raise TemplateError(f"{where} was stopped: {type(e).__name__}: {e}.") from None
    except Exception as e:  # noqa: BLE001 - any other failure inside template code is bad input
        raise TemplateError(f"{where} failed to render: {type(e).__name__}: {e}.") from None


def _check_length(template: str, source_name: str) -> None:
    if not isinstance(template, str):
        raise TemplateError(f"{source_name}: chat template is not a string but {type(template).__name__}.")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"{source_name}: chat template has {len(template):,} characters, more "
                            f"than the {MAX_TEMPLATE_CHARS:,} allowed.")


def check_syntax(template: str, source_name: str, *, timeout_s: float = TIMEOUT_S) -> None:
    """Compile `template`; raise TemplateError (an InputError) naming `source_name` if it is invalid."""
    _check_length(template, source_name)
    _run_bounded(source_name, timeout_s, lambda: _compile(template))


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
    """Render a chat template with transformers' semantics, sandboxed and bounded.

    Extra keyword arguments (enable_thinking, skip_think, ...) become template variables, as in
    transformers' apply_chat_template; like transformers, a message's reasoning given as `thinking` or
    `reasoning` is also offered as `reasoning_content`. Raises TemplateError on any failure.
    """
    _check_length(template, source_name)
    variables = dict(
        messages=_alias_reasoning(messages),
        tools=tools,
        documents=kwargs.pop("documents", None),
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        **kwargs,
    )

    def work() -> str:
        chunks: list[str] = []
        size = 0
        for chunk in _compile(template).generate(**variables):
            size += len(chunk)
            if size > max_output_chars:
                raise _LimitExceeded(f"its output passed {max_output_chars:,} characters")
            chunks.append(chunk)
        return "".join(chunks)

    return _run_bounded(source_name, timeout_s, work)
