"""Renders deploy/helm/voxpipe without the helm binary (none is installable from PyPI, npm or
Debian here): the chart's Go-template actions are translated one by one into Jinja2, which does
the rendering.

Only the part of Helm's template language the chart uses is translated: ``.Values``/``.Release``
/``.Chart`` fields, ``$`` and ``$var``, pipelines, ``if``/``else if``/``else``, ``range $k, $v :=``
over maps and ``range $v :=`` over lists, ``define``/``include``, comments, ``{{-``/``-}}`` trims,
and the functions in ``FUNCTIONS`` (Sprig's, with Helm's ``toYaml``). Anything else (``with``,
dot-rebinding ``range``, an unknown function) raises ``Unsupported``, so a chart edit beyond the
subset fails the test instead of rendering wrongly. ``helm template`` stays the reference: the
README says how to run it where helm is installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import yaml

__all__ = ["Unsupported", "render_chart"]

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_TERM = re.compile(
    r'\s*("(?:[^"\\]|\\.)*"|\(|\)|\$[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*'
    r"|\$(?:\.[A-Za-z_][A-Za-z0-9_]*)*|(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.|-?\d+(?:\.\d+)?"
    r"|[A-Za-z_][A-Za-z0-9_]*)"
)


class Unsupported(Exception):
    """A template construct outside the translated subset."""


def _empty(v: Any) -> bool:
    return v is None or v is False or v == 0 or (hasattr(v, "__len__") and len(v) == 0)


def _goprint(v: Any) -> str:
    if isinstance(v, jinja2.Undefined) or v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _indent(n: int, s: str) -> str:
    return "\n".join(" " * n + line for line in str(s).split("\n"))


def _to_yaml(v: Any) -> str:
    if isinstance(v, jinja2.Undefined) or v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quote": lambda *a: " ".join(json.dumps(_goprint(x)) for x in a if x is not None),
    "toYaml": _to_yaml,
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "default": lambda d, v=None: d if _empty(v) else v,
    "trunc": lambda n, s: str(s)[:n],
    "trimSuffix": lambda suf, s: str(s)[: -len(suf)] if suf and str(s).endswith(suf) else s,
    "printf": lambda fmt, *a: fmt.replace("%v", "%s") % tuple(_goprint(x) for x in a),
    "contains": lambda sub, s: str(sub) in str(s),
    "add": lambda *a: sum(int(x) for x in a),
    "not": _empty,
    "and": lambda *a: next((x for x in a if _empty(x)), a[-1]),
    "or": lambda *a: next((x for x in a if not _empty(x)), a[-1]),
    "eq": lambda a, *b: any(a == x for x in b),
}


def _terms(command: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(command):
        if command[pos:].strip() == "":
            break
        m = _TERM.match(command, pos)
        if m is None:
            raise Unsupported(f"cannot read {command[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _split_pipes(text: str) -> list[str]:
    parts, depth, quoted, cur = [], 0, False, ""
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
        elif not quoted and depth == 0 and ch == "|":
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def _value(term: str) -> str:
    if term.startswith('"') or re.fullmatch(r"-?\d+(?:\.\d+)?", term):
        return term
    if term in ("true", "false", "nil"):
        return {"true": "True", "false": "False", "nil": "None"}[term]
    if term == ".":
        return "dot"
    if term.startswith("."):
        return "dot" + term
    if term == "$" or term.startswith("$."):
        return "root" + term[1:]
    if term.startswith("$"):
        return "v_" + term[1:]
    raise Unsupported(f"unknown term {term!r}")


def _args(terms: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(terms):
        if terms[i] == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(terms[j], 0)
                j += 1
            out.append("(" + _pipeline(" ".join(terms[i + 1 : j - 1])) + ")")
            i = j
        else:
            out.append(_value(terms[i]) if terms[i] not in FUNCTIONS else _call(terms[i], []))
            i += 1
    return out


def _call(name: str, args: list[str]) -> str:
    if name not in FUNCTIONS and name != "include":
        raise Unsupported(f"function {name!r}")
    return f"f_{name}({', '.join(args)})"


def _command(command: str, piped: str | None) -> str:
    terms = _terms(command)
    if not terms:
        raise Unsupported("empty command")
    head = terms[0]
    if head in FUNCTIONS or head == "include":
        args = _args(terms[1:])
        return _call(head, [*args, piped] if piped is not None else args)
    if piped is not None or len(terms) > 1:
        raise Unsupported(f"{command!r} is not a function call")
    return _args(terms)[0]


def _pipeline(text: str) -> str:
    expr: str | None = None
    for command in _split_pipes(text):
        expr = _command(command.strip(), expr)
    assert expr is not None
    return expr


def _translate(source: str, defines: dict[str, str]) -> str:
    """Jinja2 source for one template file; its ``define`` blocks go into ``defines``."""
    out: list[str] = []
    stack: list[tuple[str, Any]] = []  # (kind, saved output for define)
    pos = 0
    for m in _ACTION.finditer(source):
        out.append(source[pos : m.start()].replace("{#", "{{ '{#' }}"))
        pos = m.end()
        left, body, right = m.group(1), m.group(2), m.group(3)

        def tag(inner: str, left: str = left, right: str = right) -> str:
            return "{%" + left + " " + inner + " " + right + "%}"

        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word) :].strip()
        if body.startswith("/*"):
            out.append("{#" + left + " comment " + right + "#}")
        elif word == "define":
            out.append("{#" + left + " define #}")
            stack.append(("define", (json.loads(rest), out)))
            out = ["{# define " + right + "#}"]  # the body starts after the trim
        elif word == "if":
            stack.append(("if", None))
            out.append(tag(f"if {_pipeline(rest)}"))
        elif word == "else" and rest.startswith("if "):
            out.append(tag(f"elif {_pipeline(rest[3:])}"))
        elif word == "else":
            out.append(tag("else"))
        elif word == "range":
            names, sep, what = rest.partition(":=")
            if not sep:
                raise Unsupported("range without variables (it rebinds the dot)")
            var_names = ["v_" + n.strip().lstrip("$") for n in names.split(",")]
            if len(var_names) == 2:
                out.append(tag(f"for {var_names[0]}, {var_names[1]} in f_items({_pipeline(what)})"))
            else:
                out.append(tag(f"for {var_names[0]} in {_pipeline(what)}"))
            stack.append(("range", None))
        elif word == "end":
            kind, saved = stack.pop()
            if kind == "define":
                name, outer = saved
                defines[name] = "".join([*out, "{#" + left + " end #}"])
                out = outer
                out.append("{# end " + right + "#}")
            else:
                out.append(tag("endif" if kind == "if" else "endfor"))
        elif word in ("with", "template", "block", "tpl"):
            raise Unsupported(f"{word!r} action")
        else:
            out.append("{{" + left + " " + _pipeline(body) + " " + right + "}}")
    out.append(source[pos:])
    if stack:
        raise Unsupported(f"unclosed {stack[-1][0]}")
    return "".join(out)


class _Environment(jinja2.Environment):
    """Go templates look fields up in maps by key: ``.Values.secrets.values`` is a key."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = (
            _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        )
    return merged


def render_chart(
    chart_dir: Path, values: dict[str, Any] | None = None, *, release: str = "voxpipe"
) -> dict[str, str]:
    """``helm template``'s output per template file (files rendering to nothing left out)."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    merged = _merge(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}, values or {})
    ctx = {
        "Values": merged,
        "Release": {"Name": release, "Namespace": "default", "Service": "Helm"},
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart["appVersion"],
        },
    }
    env = _Environment(
        undefined=jinja2.ChainableUndefined,
        keep_trailing_newline=True,
        finalize=_goprint,
        autoescape=False,
    )
    defines: dict[str, str] = {}
    sources = {
        p.name: _translate(p.read_text(), defines)
        for p in sorted((chart_dir / "templates").iterdir())
    }
    compiled = {name: env.from_string(src) for name, src in defines.items()}

    def include(name: str, dot: Any) -> str:
        return compiled[name].render(dot=dot, root=dot)

    env.globals.update({f"f_{k}": v for k, v in FUNCTIONS.items()})
    env.globals["f_include"] = include
    env.globals["f_items"] = lambda m: sorted((m or {}).items())
    rendered = {}
    for name, src in sources.items():
        if name.startswith("_"):
            continue
        text = env.from_string(src).render(dot=ctx, root=ctx)
        if text.strip():
            rendered[name] = text
    return rendered
