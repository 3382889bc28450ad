"""One schema path: a Python type as the JSON schema a model is shown, and JSON data back as
that type, for structured output, tool parameters and tool results alike.

attrs classes, standard dataclasses and TypedDicts are described here and loaded by the
kernel's codec (cattrs). pydantic v2 models and pydantic dataclasses are described and validated
by pydantic itself, which stays optional: it is never imported here. A class can only be a
pydantic one if pydantic is already loaded (whoever defined the class imported it), so
``sys.modules`` is asked, not the import system.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import cattrs

from .errors import AopkitError, DecodeError, join_path
from .jsontext import problem

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}
_REF = "#/$defs/"
_MORE_PROBLEMS = 3  # pydantic problems listed after the first one


class SchemaError(AopkitError, TypeError):
    """A type that cannot be described as JSON schema (say where, and what would work)."""


def json_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of ``tp``: an attrs class, a dataclass, a TypedDict, a pydantic v2 model,
    or a plain type (str, int, float, bool, enums, Literal, lists, dicts, Optional, unions).
    Classes are inlined; a recursive one and pydantic's own definitions go to ``$defs``."""
    schemas = Schemas()
    return schemas.rooted(schemas.of(tp))


class Schemas:
    """Builds the schemas of several types that share one ``$defs`` (a tool's parameters).
    Call :meth:`of` for each, then :meth:`rooted` on the object that holds them."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}
        self._keys: dict[Any, str] = {}  # class -> its name in $defs
        self._building: list[type] = []
        self._recursive: set[type] = set()

    def of(self, tp: Any) -> dict[str, Any]:
        """The schema of ``tp``, possibly referring to :attr:`defs`."""
        try:
            scalar = _SCALARS.get(tp)
        except TypeError:  # unhashable, so not a type at all (``x: [int]``): refused below
            scalar = None
        if scalar is not None:
            return dict(scalar)
        if _is_pydantic(tp):
            return self._pydantic(tp)
        origin, args = get_origin(tp), get_args(tp)
        if origin is Literal:
            return _choices(list(args))
        if origin in (Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            inner = (
                self.of(options[0])
                if len(options) == 1
                else {"anyOf": [self.of(a) for a in options]}
            )
            return {"anyOf": [inner, {"type": "null"}]} if len(options) < len(args) else inner
        if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
            return {"type": "array", "items": self.of(args[0] if args else Any)}
        if origin is dict or tp is dict:
            value = args[1] if len(args) == 2 else Any
            return {"type": "object", "additionalProperties": self.of(value)}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _choices([m.value for m in tp])
        if isinstance(tp, type) and _fields_of(tp) is not None:
            return self._class(tp)
        if _pydantic_v1(tp):
            raise SchemaError(
                f"{tp.__name__} is a pydantic v1 model (pydantic.v1.BaseModel), which is not "
                "supported; derive it from pydantic.BaseModel (pydantic 2)"
            )
        raise SchemaError(
            f"cannot describe {tp!r} as JSON schema; use attrs classes, dataclasses, "
            "TypedDicts, pydantic models, str, int, float, bool, enums, Literal, lists, dicts "
            "and Optional"
        )

    def rooted(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` as a document: a root that is only a reference is inlined (providers
        want an object at the root) and the definitions are attached."""
        parts = schema.get("allOf")
        if isinstance(parts, list) and len(parts) == 1 and "$ref" in parts[0]:  # older pydantic
            schema = {**{k: v for k, v in schema.items() if k != "allOf"}, **parts[0]}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**self.defs[ref[len(_REF) :]], **siblings}
        return {**schema, "$defs": self.defs} if self.defs else schema

    def _class(self, tp: type) -> dict[str, Any]:
        if tp in self._building:
            self._recursive.add(tp)
            return {"$ref": _REF + self._key(tp)}
        try:
            hints = typing.get_type_hints(tp)
        except Exception as exc:  # an undefined name, an annotation that is not Python
            raise SchemaError(
                f"cannot resolve the annotations of {tp.__name__}: {exc}; define "
                "the classes it uses at module level"
            ) from None
        self._building.append(tp)
        try:
            properties: dict[str, Any] = {}
            required = []
            for name, default, description in _fields_of(tp) or ():
                try:
                    prop = self.of(hints.get(name, Any))
                except SchemaError as exc:
                    raise SchemaError(f"{tp.__name__}.{name}: {exc}") from None
                if description:
                    prop["description"] = description
                if default is _REQUIRED:
                    required.append(name)
                elif default is not _NO_DEFAULT:
                    default = default.value if isinstance(default, enum.Enum) else default
                    if json_default(default):
                        prop["default"] = default
                properties[name] = prop
        finally:
            self._building.pop()
        schema: dict[str, Any] = {
            "type": "object",
            "title": tp.__name__,
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        if tp.__doc__ and not tp.__doc__.startswith(f"{tp.__name__}("):
            schema["description"] = tp.__doc__.strip().split("\n\n")[0]
        if tp not in self._recursive:
            return schema
        self.defs[self._key(tp)] = schema
        return {"$ref": _REF + self._key(tp)}

    def _key(self, tp: type) -> str:
        """The name of ``tp`` in $defs: its own, numbered if another class holds it."""
        if tp not in self._keys:
            self._keys[tp] = self._fresh(tp.__name__)
        return self._keys[tp]

    def _fresh(self, name: str) -> str:
        taken = set(self._keys.values()) | set(self.defs)
        key, n = name, 1
        while key in taken:
            n += 1
            key = f"{name}{n}"
        return key

    def _pydantic(self, tp: Any) -> dict[str, Any]:
        try:
            schema: dict[str, Any] = _adapter(tp).json_schema(ref_template=_REF + "{model}")
        except Exception as exc:  # pydantic's own errors: an unresolved name, a Callable field
            raise SchemaError(f"pydantic cannot describe {tp!r}: {exc}") from None
        theirs = schema.pop("$defs", {})
        renamed: dict[str, str] = {}
        for key, definition in theirs.items():
            if self.defs.get(key, definition) != definition:  # another class of that name
                renamed[_REF + key] = _REF + self._fresh(key)
        if renamed:
            schema, theirs = _renamed(schema, renamed), _renamed(theirs, renamed)
            theirs = {renamed.get(_REF + k, _REF + k)[len(_REF) :]: v for k, v in theirs.items()}
        self.defs.update(theirs)
        return schema


class _Marker(enum.Enum):
    REQUIRED = "required"
    NO_DEFAULT = "no default"  # a default made by a factory: not shown


_REQUIRED, _NO_DEFAULT = _Marker.REQUIRED, _Marker.NO_DEFAULT


def _fields_of(tp: type) -> list[tuple[str, Any, str | None]] | None:
    """(name, default, description) of each field of an attrs class, a dataclass or a
    TypedDict; None for any other type."""
    if attrs.has(tp):
        return [
            (
                f.name,
                _REQUIRED
                if f.default is attrs.NOTHING
                else _NO_DEFAULT
                if isinstance(f.default, attrs.Factory)  # type: ignore[arg-type]
                else f.default,
                f.metadata.get("description"),
            )
            for f in attrs.fields(tp)
        ]
    if dataclasses.is_dataclass(tp):
        return [
            (
                f.name,
                f.default
                if f.default is not dataclasses.MISSING
                else _NO_DEFAULT
                if f.default_factory is not dataclasses.MISSING
                else _REQUIRED,
                f.metadata.get("description"),
            )
            for f in dataclasses.fields(tp)
            if f.init
        ]
    if typing.is_typeddict(tp):
        required = tp.__required_keys__  # type: ignore[attr-defined]
        return [
            (name, _REQUIRED if name in required else _NO_DEFAULT, None)
            for name in typing.get_type_hints(tp)
        ]
    return None


def json_default(value: Any) -> bool:
    """Whether ``value`` can be shown as a default in a schema: plain JSON data (a default
    such as NaN, a set or a datetime would make the schema unsendable)."""
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        return False
    return problem(value) is None


def _choices(values: list[Any]) -> dict[str, Any]:
    values = [v.value if isinstance(v, enum.Enum) else v for v in values]
    kinds = {type(v) for v in values}
    base = _SCALARS.get(next(iter(kinds)), {}) if len(kinds) == 1 else {}
    return {**base, "enum": values}


def _renamed(node: Any, renamed: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: renamed.get(v, v) if k == "$ref" else _renamed(v, renamed) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_renamed(v, renamed) for v in node]
    return node


# -- pydantic, never imported here ----------------------------------------------------------


def _is_pydantic(tp: Any) -> bool:
    """Whether pydantic (v2) describes and validates ``tp``: a pydantic model or dataclass, or
    a union with one among its options (only pydantic can tell its options apart)."""
    if "pydantic" not in sys.modules:
        return False
    if get_origin(tp) in (Union, types.UnionType):
        return any(_is_pydantic(a) for a in get_args(tp))
    if not isinstance(tp, type):
        return False
    if dataclasses.is_dataclass(tp):
        return "__pydantic_validator__" in vars(tp)
    return "pydantic.main" in _modules(tp) and hasattr(tp, "model_json_schema")


def _pydantic_v1(tp: Any) -> bool:
    modules = _modules(tp) if isinstance(tp, type) else set()
    return "pydantic.v1.main" in modules or "pydantic.main" in modules


def _modules(tp: type) -> set[str]:
    return {getattr(c, "__module__", "") for c in tp.__mro__}


@functools.lru_cache(maxsize=256)
def _adapter(tp: Any) -> Any:
    pydantic = sys.modules["pydantic"]
    return pydantic.TypeAdapter(tp)


def _validate(value: Any, tp: Any) -> Any:
    """``value`` (JSON data) as ``tp``, validated by pydantic in JSON mode and strictly, like
    every other check: a value of the wrong JSON type is a fault for the correctors, not
    something to coerce. pydantic's problems become one :class:`DecodeError` at the first."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DecodeError("", f"not JSON data: {exc}") from None
    adapter = _adapter(tp)
    try:
        return adapter.validate_json(text, strict=True)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        if errors is None:
            raise
        found = list(_problems(errors(include_url=False, include_input=False)))
        if not found:
            raise DecodeError("", str(exc)) from None
        (path, problem), rest = found[0], found[1 : 1 + _MORE_PROBLEMS]
        if rest:  # their paths start at the value pydantic checked, whose own path is unknown
            where = getattr(tp, "__name__", "value")
            others = "; ".join(f"{p or '<root>'}: {m}" for p, m in rest)
            if len(found) > 1 + _MORE_PROBLEMS:
                others += f"; and {len(found) - 1 - _MORE_PROBLEMS} more"
            problem += f" (other problems in the same {where}: {others})"
        raise DecodeError(path, problem) from None


def _problems(errors: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(path, message) of each pydantic error, its location written as our paths are."""
    for error in errors:
        path = ""
        for step in error.get("loc", ()):
            path = join_path(path, f"[{step}]" if isinstance(step, int) else str(step))
        yield path, str(error.get("msg", "invalid"))


def _dump(value: Any) -> Any:
    """A pydantic value as JSON data, under the names (aliases) its schema shows."""
    kind: Any = type(value)
    return _adapter(kind).dump_python(value, mode="json", by_alias=True)


def teach(converter: cattrs.Converter) -> None:
    """Make ``converter`` load and dump pydantic values wherever they appear (a tool
    parameter, a list of models, a field of an attrs class) through pydantic."""
    converter.register_structure_hook_func(_is_pydantic, _validate)
    converter.register_unstructure_hook_func(_is_pydantic, _dump)
