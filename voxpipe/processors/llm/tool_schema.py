"""Tool schemas from Python signatures: a tool is declared once, as a typed function.

``tool_signature(handler, name)`` reads the handler's parameters and docstring and gives the
JSON schema of its arguments (what the model is told) and a checker for the arguments a model
sends (what the handler gets, converted to the parameter types). The types pydantic knows are
accepted: ``str``/``int``/``float``/``bool``, ``list[...]``, ``Literal[...]`` and ``Enum``
(as enums), ``Optional`` and defaults (not required), pydantic models and dataclasses (nested
objects). Descriptions come from ``Annotated[T, "description"]`` or the docstring's
``Args:`` section (Google, NumPy or reST style)::

    async def next_opening(day: Annotated[str, "Day of the week"], late: bool = False) -> str:
        \"\"\"When the shop opens on a given day.\"\"\"

A tool registered with an explicit schema keeps it; its handler's signature then only checks
that required arguments are there and no unknown ones are.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import docstring_parser
import pydantic
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

__all__ = ["ToolArgumentsError", "ToolSignature", "tool_signature"]

_CACHE_SIZE = 256


class ToolArgumentsError(ValueError):
    """Arguments a model sent that the tool's signature does not accept."""


@dataclass(frozen=True, slots=True)
class ToolSignature:
    """A tool handler's parameters: their JSON schema, and the check of a call's arguments."""

    name: str
    parameters: dict[str, Any]  # the JSON schema of the arguments object
    description: str | None = None  # from the docstring, without its Args: section
    required: frozenset[str] = frozenset()
    accepted: frozenset[str] = frozenset()
    extra: bool = False  # the handler takes **kwargs: other arguments pass through
    model: type[BaseModel] | None = field(default=None, repr=False)  # None: no conversion

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the handler, converted to its parameter types.

        Raises ``ToolArgumentsError`` naming what is missing, unknown or of the wrong type.
        """
        if self.model is None:
            self._check_names(arguments)
            return dict(arguments)
        try:
            checked = self.model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolArgumentsError(self._explain(exc)) from None
        values = {
            _alias(self.model, key): getattr(checked, key) for key in checked.model_fields_set
        }
        values.update(checked.model_extra or {})
        return values

    def from_text(self, values: Mapping[str, str]) -> dict[str, Any]:
        """Arguments from text (a pattern's named groups), converted to the parameter types.

        Names that are not parameters are left out (they may be for a reply template); text
        that cannot be converted is passed as it is (the call then gets the tool's clear
        error, as a model's bad arguments would).
        """
        props: dict[str, Any] = self.parameters.get("properties") or {}
        out: dict[str, Any] = {
            k: _from_text(v, props.get(k) or {})
            for k, v in values.items()
            if k in props or k in self.accepted or self.extra
        }
        if self.model is None:
            return out
        fields = {info.alias or key: info for key, info in self.model.model_fields.items()}
        for key, value in out.items():
            info = fields.get(key)
            if info is None:
                continue
            # One by one: a pattern may give some arguments and the model's context others.
            kind: Any = info.annotation
            if info.metadata:  # constraints (Field(ge=1), ...) without the field's alias
                kind = Annotated[(kind, *info.metadata)]
            adapter: TypeAdapter[Any] = TypeAdapter(kind)
            try:
                out[key] = adapter.dump_python(adapter.validate_python(value), mode="json")
            except ValidationError:
                pass  # left as text
        return out

    def _check_names(self, arguments: Mapping[str, Any]) -> None:
        problems = [
            f"missing required argument {n!r}" for n in sorted(self.required - set(arguments))
        ]
        if not self.extra:
            problems += [f"unexpected argument {n!r}" for n in arguments if n not in self.accepted]
        if problems:
            raise ToolArgumentsError(self._message(problems))

    def _explain(self, exc: ValidationError) -> str:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing" and len(error["loc"]) == 1:
                problems.append(f"missing required argument {where!r}")
            elif error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
                problems.append(f"unexpected argument {where!r}")
            else:
                problems.append(f"argument {where!r}: {error['msg']}")
        return self._message(problems)

    def _message(self, problems: list[str]) -> str:
        props = self.parameters.get("properties") or {}
        expected = ", ".join(
            f"{n} ({_type_name(s)}{'' if n in self.required else ', optional'})"
            for n, s in props.items()
        )
        return f"{self.name}: {'; '.join(problems)}. Expected arguments: {expected or 'none'}"


def tool_signature(
    handler: Callable[..., Any],
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
) -> ToolSignature:
    """The signature of tool ``name``; ``parameters`` is an explicit schema (not inferred).

    Raises ``TypeError`` for a handler whose parameters cannot be passed by keyword or whose
    types have no JSON schema (pass an explicit schema for those).
    """
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins: nothing to read, nothing checked
        return ToolSignature(name, parameters or _EMPTY, extra=True)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_POSITIONAL]
    extra = any(p.kind is p.VAR_KEYWORD for p in params)
    params = [p for p in params if p.kind is not p.VAR_KEYWORD]
    blocked = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if blocked:
        raise TypeError(
            f"tool {name!r}: parameter(s) {', '.join(blocked)} are positional-only; a tool "
            "is called with keyword arguments"
        )
    params = [p for p in params if p.kind is not p.POSITIONAL_ONLY]
    required = frozenset(p.name for p in params if p.default is p.empty)
    accepted = frozenset(p.name for p in params)
    doc = _docstring(handler)
    if parameters is not None:
        return ToolSignature(name, parameters, doc.description, required, accepted, extra)
    key = _cache_key(handler, name)
    found = _cache.get(key) if key is not None else None
    if found is None:
        found = _infer(handler, name, params, doc, required, accepted, extra)
        if key is not None:
            if len(_cache) >= _CACHE_SIZE:
                _cache.pop(next(iter(_cache)))
            _cache[key] = found
    return found


# ---------------------------------------------------------------------------- inference

_EMPTY: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class _Doc:
    description: str | None
    params: dict[str, str]


def _docstring(handler: Callable[..., Any]) -> _Doc:
    text = inspect.getdoc(handler) or ""
    if not text.strip():
        return _Doc(None, {})
    parsed = docstring_parser.parse(text)
    # Lines wrapped in the source are one line for the model; paragraphs stay apart.
    paragraphs = re.split(r"\n\s*\n", parsed.description or "")
    description = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip()) or None
    params = {p.arg_name: " ".join(p.description.split()) for p in parsed.params if p.description}
    return _Doc(description, params)


def _cache_key(handler: Callable[..., Any], name: str) -> tuple[Any, ...] | None:
    # Bots build their tools per call (closures over the call's state): the same code with
    # the same defaults has the same schema, so it is built once per worker.
    fn = getattr(handler, "__func__", handler)
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    try:
        return (
            code,
            name,
            repr(getattr(fn, "__defaults__", None)),
            repr(getattr(fn, "__kwdefaults__", None)),
            repr(getattr(fn, "__annotations__", None)),
            getattr(fn, "__doc__", None),
        )
    except Exception:  # a default whose repr fails: just do not cache
        return None


_cache: dict[tuple[Any, ...], ToolSignature] = {}


def _infer(
    handler: Callable[..., Any],
    name: str,
    params: list[inspect.Parameter],
    doc: _Doc,
    required: frozenset[str],
    accepted: frozenset[str],
    extra: bool,
) -> ToolSignature:
    hints = _type_hints(handler, name)
    fields: dict[str, Any] = {}
    for i, p in enumerate(params):
        annotation = hints.get(p.name, Any)
        description = _annotated_description(annotation) or doc.params.get(p.name)
        spec: dict[str, Any] = {"alias": p.name, "description": description}
        if p.default is not p.empty:
            spec["default"] = p.default
        # Field names of their own: a parameter may be called "json" or "schema" (BaseModel's).
        fields[f"p{i}"] = (annotation, pydantic.Field(**spec))
    config = ConfigDict(
        extra="allow" if extra else "forbid",
        coerce_numbers_to_str=True,  # an order "number" sent as 12345 is still fine as text
        arbitrary_types_allowed=False,
    )
    try:
        model = pydantic.create_model(f"{name}_arguments", __config__=config, **fields)
        schema = model.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
        raise TypeError(
            f"tool {name!r}: a parameter's type has no JSON schema ({exc}). Use str, int, "
            "float, bool, list, Literal, Enum or a pydantic model, or pass an explicit schema"
        ) from exc
    return ToolSignature(name, _clean(schema), doc.description, required, accepted, extra, model)


def _type_hints(handler: Callable[..., Any], name: str) -> dict[str, Any]:
    target: Any = handler
    if isinstance(handler, functools.partial):
        target = handler.func
    elif not (inspect.isfunction(handler) or inspect.ismethod(handler)):
        target = getattr(handler, "__call__", handler)  # noqa: B004 - a callable object
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # a name the annotation string uses is not importable there
        raise TypeError(
            f"tool {name!r}: cannot resolve its parameter annotations ({exc}); define the "
            "types at module level, or pass an explicit schema"
        ) from exc


def _annotated_description(annotation: Any) -> str | None:
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, str):
                return meta
    return None


def _alias(model: type[BaseModel], key: str) -> str:
    info = model.model_fields.get(key)
    return info.alias if info is not None and info.alias else key


# ---------------------------------------------------------------------------- schema cleanup


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema made plain for a model: ``$ref``s inlined (unless recursive), no
    titles, ``Optional`` parameters as their type (they are simply not required)."""
    defs = schema.pop("$defs", None) or {}
    if defs and not _recursive(defs):
        schema = _inline(schema, defs)
        defs = {}
    _tidy(schema)
    for sub in defs.values():
        _tidy(sub)
    out: dict[str, Any] = {"type": "object", "properties": schema.get("properties") or {}}
    if schema.get("required"):
        out["required"] = list(schema["required"])
    if schema.get("additionalProperties") is False:
        out["additionalProperties"] = False
    if defs:
        out["$defs"] = defs
    return out


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {_ref_name(node["$ref"])} if isinstance(node.get("$ref"), str) else set()
        for v in node.values():
            found |= _refs(v)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _recursive(defs: dict[str, Any]) -> bool:
    edges = {k: _refs(v) for k, v in defs.items()}

    def reaches(start: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == start or nxt in seen:
                return True
            if reaches(nxt, seen | {nxt}):
                return True
        return False

    return any(reaches(k, {k}) for k in edges)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        target = _inline(defs.get(_ref_name(node["$ref"]), {}), defs)
        siblings = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
        return {**target, **siblings}
    return {k: _inline(v, defs) for k, v in node.items()}


_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains")


def _tidy(node: dict[str, Any]) -> None:
    node.pop("title", None)
    props = node.get("properties")
    if isinstance(props, dict):
        required = set(node.get("required") or ())
        for key, sub in list(props.items()):
            if isinstance(sub, dict):
                if key not in required:
                    props[key] = sub = _drop_null(sub)
                _tidy(sub)
    for key in _SCHEMA_ONE:
        if isinstance(node.get(key), dict):
            _tidy(node[key])
    for key in _SCHEMA_LISTS:
        for sub in node.get(key) or ():
            if isinstance(sub, dict):
                _tidy(sub)


def _drop_null(prop: dict[str, Any]) -> dict[str, Any]:
    """``Optional[T] = None`` as ``T`` (the parameter is optional by not being required)."""
    if prop.get("default", ...) is None:
        prop = {k: v for k, v in prop.items() if k != "default"}
    options = prop.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(options):
            rest = {k: v for k, v in prop.items() if k != "anyOf"}
            return {**kept[0], **rest}
    return prop


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + "/".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"list of {_type_name(schema['items'])}"
    return str(kind) if kind else "any"


# ---------------------------------------------------------------------------- text arguments

_LIST_SPLIT = re.compile(r"\s*(?:,|\band\b|\bor\b)\s*", re.IGNORECASE)


def _from_text(value: Any, schema: dict[str, Any]) -> Any:
    """A pattern's captured text toward the parameter's type (pydantic finishes the job)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    enum = schema.get("enum")
    if isinstance(enum, list):
        for option in enum:  # "Monday" for "monday": a pattern matches case-insensitively
            if str(option).lower() == text.lower():
                return option
    if schema.get("type") == "array":
        items = schema.get("items")
        item: dict[str, Any] = items if isinstance(items, dict) else {}
        return [_from_text(part, item) for part in _LIST_SPLIT.split(text) if part]
    return text
