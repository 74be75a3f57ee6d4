"""A small renderer for the subset of Go's text/template that Ollama chat templates use.

Why: a Modelfile's TEMPLATE is Go template text; to check that it renders exactly the prompt the model's
own Jinja template renders, we need to execute it without Go or Ollama. Supported, with Go's semantics:
text and `{{ }}` actions with `{{-`/`-}}` trimming and comments; `if`/`else if`/`else`/`end`,
`range` (with `$i, $x :=`, `continue`, `break`, `else`), `with`, `$x := ...` and `$x = ...` (block scoped),
pipelines (`a | f`), parentheses, fields (`.Role`, `$.Messages`, `$m.Content`), string/number/bool literals
and the functions and, or, not, eq, ne, lt, le, gt, ge, len, index, slice, print, and Ollama's json. Data are dicts with
Go-style field names; a missing field is an error, as on a Go struct. Anything else raises GoTemplateError.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class GoTemplateError(ValueError):
    pass


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+)|(?P<var>\$\w*(?:\.\w+)*)'
    r"|(?P<field>(?:\.\w+)+|\.)|(?P<op>:=|=|\||\(|\)|,)|(?P<ident>\w+))"
)
_ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


@dataclass
class _Node:
    kind: str  # text | out | if | range | with | assign | continue | break
    arg: Any = None
    body: list | None = None
    alt: list | None = None  # else branch
    vars: tuple = ()
    declare: bool = True


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _lex(src: str) -> list[tuple[str, str]]:
    """[(kind, text)]: kind 'text' or 'action'; trim markers applied to the neighbouring text."""
    items: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        items.append(("text", text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(("action", body))
        pos = m.end()
        if m.group(3):
            rest = src[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
    items.append(("text", src[pos:]))
    return [(k, t) for k, t in items if k == "action" or t]


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"cannot parse {expr[pos:]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


def _literal(tok: str) -> str:
    if tok.startswith("`"):
        return tok[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), "\\" + m.group(1)), tok[1:-1])


class _Parser:
    def __init__(self, src: str) -> None:
        self.items = _lex(src)
        self.i = 0

    def parse(self, stop: tuple[str, ...] = ()) -> tuple[list, str | None]:
        nodes: list[_Node] = []
        while self.i < len(self.items):
            kind, text = self.items[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(_Node("text", text))
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in ("end", "else"):
                if word not in stop and not (word == "else" and "else" in stop):
                    raise GoTemplateError(f"unexpected {{{{{text}}}}}")
                return nodes, text
            if word in ("if", "with"):
                nodes.append(self._conditional(word, text[len(word) :]))
            elif word == "range":
                nodes.append(self._range(text[5:]))
            elif word in ("continue", "break"):
                nodes.append(_Node(word))
            else:
                toks = _tokens(text)
                if len(toks) > 2 and toks[0][0] == "var" and toks[1] in (("op", ":="), ("op", "=")):
                    nodes.append(_Node("assign", _Expr(toks[2:]), vars=(toks[0][1],), declare=toks[1][1] == ":="))
                else:
                    nodes.append(_Node("out", _Expr(toks)))
        if stop:
            raise GoTemplateError("missing {{end}}")
        return nodes, None

    def _conditional(self, word: str, expr: str) -> _Node:
        node = _Node(word, _Expr(_tokens(expr)))
        node.body, term = self.parse(("end", "else"))
        if term and term.startswith("else"):
            rest = term[4:].strip()
            if rest.startswith("if ") or rest.startswith("with "):
                w = rest.split(None, 1)[0]
                node.alt = [self._conditional(w, rest[len(w) :])]
            else:
                node.alt, _ = self.parse(("end",))
        return node

    def _range(self, expr: str) -> _Node:
        toks = _tokens(expr)
        names: tuple = ()
        if ("op", ":=") in toks:
            k = toks.index(("op", ":="))
            names = tuple(t for kind, t in toks[:k] if kind == "var")
            toks = toks[k + 1 :]
        node = _Node("range", _Expr(toks), vars=names)
        node.body, term = self.parse(("end", "else"))
        if term and term.startswith("else"):
            node.alt, _ = self.parse(("end",))
        return node


class _Expr:
    def __init__(self, toks: list[tuple[str, str]]) -> None:
        self.toks = toks

    def eval(self, ctx: "_Ctx") -> Any:
        value, pos = self._pipeline(self.toks, 0, ctx)
        if pos != len(self.toks):
            raise GoTemplateError(f"unexpected {self.toks[pos][1]!r}")
        return value

    def _pipeline(self, toks, pos, ctx):
        value, pos = self._command(toks, pos, ctx, None)
        while pos < len(toks) and toks[pos] == ("op", "|"):
            value, pos = self._command(toks, pos + 1, ctx, (value,))
        return value, pos

    def _command(self, toks, pos, ctx, piped):
        kind, tok = toks[pos]
        if kind == "ident" and tok in _FUNCS:
            args, pos = [], pos + 1
            while pos < len(toks) and toks[pos][1] not in ("|", ")"):
                a, pos = self._operand(toks, pos, ctx)
                args.append(a)
            args += list(piped or ())
            return _FUNCS[tok](*args), pos
        value, pos = self._operand(toks, pos, ctx)
        if piped:
            raise GoTemplateError(f"cannot pipe into {tok!r}")
        return value, pos

    def _operand(self, toks, pos, ctx):
        kind, tok = toks[pos]
        if tok == "(":
            value, pos = self._pipeline(toks, pos + 1, ctx)
            if pos >= len(toks) or toks[pos][1] != ")":
                raise GoTemplateError("missing )")
            pos += 1
            while pos < len(toks) and toks[pos][0] == "field" and toks[pos][1] != ".":
                value = _fields(value, toks[pos][1])
                pos += 1
            return value, pos
        if kind in ("str", "raw"):
            return _literal(tok), pos + 1
        if kind == "num":
            return int(tok), pos + 1
        if kind == "ident" and tok in ("true", "false"):
            return tok == "true", pos + 1
        if kind == "ident" and tok == "nil":
            return None, pos + 1
        if kind == "field":
            return (ctx.dot if tok == "." else _fields(ctx.dot, tok)), pos + 1
        if kind == "var":
            name, _, rest = tok.partition(".")
            value = ctx.lookup(name)
            return (_fields(value, "." + rest) if rest else value), pos + 1
        if kind == "ident" and tok in _FUNCS:
            return _FUNCS[tok](), pos + 1
        raise GoTemplateError(f"unknown name {tok!r}")


def _fields(value: Any, chain: str) -> Any:
    for name in chain.strip(".").split("."):
        if not isinstance(value, dict) or name not in value:
            raise GoTemplateError(f"can't evaluate field {name}")
        value = value[name]
    return value


def truth(v: Any) -> bool:
    """Go's notion of an empty value: false, 0, nil, and empty strings, slices and maps are false."""
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    return len(v) > 0 if hasattr(v, "__len__") else True


def _and(*args):
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args):
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _eq(a, *bs):
    if not bs:
        raise GoTemplateError("eq needs two arguments")
    return any(a == b for b in bs)


def _slice(x, *idx):
    if len(idx) == 1:
        return x[idx[0] :]
    if len(idx) == 2:
        return x[idx[0] : idx[1]]
    return x[:]


def _index(x, *keys):
    for k in keys:
        if isinstance(x, (list, tuple, str)) and not 0 <= k < len(x):
            raise GoTemplateError(f"index out of range: {k}")
        x = x[k]
    return x


def _json(v):
    """Ollama's `json` function: Go's json.Marshal, compact, map keys sorted, <, > and & escaped. (Ollama passes
    structs, whose fields keep their declared order; given dicts, this renderer sorts every object's keys.)"""
    text = json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _print(*args):
    return "".join(_show(a) for a in args)


_FUNCS = {
    "and": _and,
    "or": _or,
    "not": lambda a: not truth(a),
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "len": len,
    "index": _index,
    "slice": _slice,
    "print": _print,
    "json": _json,
}


def _show(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class _Ctx:
    def __init__(self, root: Any) -> None:
        self.dot = root
        self.scopes: list[dict[str, Any]] = [{"$": root}]

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise GoTemplateError(f"undefined variable {name}")

    def assign(self, name: str, value: Any, declare: bool) -> None:
        if declare:
            self.scopes[-1][name] = value
            return
        for scope in reversed(self.scopes):
            if name in scope:
                scope[name] = value
                return
        raise GoTemplateError(f"undefined variable {name}")


def _run(nodes: list[_Node], ctx: _Ctx, out: list[str]) -> None:
    for n in nodes:
        if n.kind == "text":
            out.append(n.arg)
        elif n.kind == "out":
            out.append(_show(n.arg.eval(ctx)))
        elif n.kind == "assign":
            ctx.assign(n.vars[0], n.arg.eval(ctx), n.declare)
        elif n.kind in ("if", "with"):
            v = n.arg.eval(ctx)
            branch = n.body if truth(v) else n.alt
            if branch:
                saved = ctx.dot
                if n.kind == "with" and truth(v):
                    ctx.dot = v
                ctx.scopes.append({})
                try:
                    _run(branch, ctx, out)
                finally:
                    ctx.scopes.pop()
                    ctx.dot = saved
        elif n.kind == "range":
            seq = n.arg.eval(ctx)
            items = list(seq.items()) if isinstance(seq, dict) else list(enumerate(seq or []))
            if not items and n.alt:
                _run(n.alt, ctx, out)
            saved = ctx.dot
            try:
                for key, item in items:
                    ctx.dot = item
                    scope = {}
                    if len(n.vars) == 1:
                        scope[n.vars[0]] = item
                    elif len(n.vars) == 2:
                        scope[n.vars[0]], scope[n.vars[1]] = key, item
                    ctx.scopes.append(scope)
                    try:
                        _run(n.body, ctx, out)
                    except _Continue:
                        pass
                    except _Break:
                        break
                    finally:
                        ctx.scopes.pop()
            finally:
                ctx.dot = saved
        elif n.kind == "continue":
            raise _Continue
        elif n.kind == "break":
            raise _Break


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render Go text/template `template` with `data` (dicts with Go field names, e.g. Messages/Role)."""
    nodes, _ = _Parser(template).parse()
    out: list[str] = []
    _run(nodes, _Ctx(data), out)
    return "".join(out)
