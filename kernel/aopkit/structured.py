"""Structured output: JSON schemas from attrs classes, and targets that validate a JSON value.

A :class:`Target` pairs the schema a model is shown with the strict check that turns a JSON
value into what the caller wants (an attrs instance, or tool arguments). Checks never coerce:
repairing is the correctors' job (fault tier 2), and they must say when they cannot.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

import attrs

from . import jsontext
from .errors import AopkitError, DecodeError

if TYPE_CHECKING:
    from .kernel import Kernel

T = TypeVar("T")
_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


class SchemaError(AopkitError, TypeError):
    """A type that cannot be described as JSON schema (say where, and what would work)."""


def json_schema(cls: Any) -> dict[str, Any]:
    """The JSON schema of an attrs class (nested classes inlined; optionals, enums, lists,
    dicts, literals and defaults understood). Field docs come from ``metadata["description"]``."""
    return _schema(cls, seen=())


def _schema(tp: Any, seen: tuple[type, ...]) -> dict[str, Any]:
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        schema: dict[str, Any] = {"enum": values}
        if len(kinds) == 1 and (kind := next(iter(kinds))) in _SCALARS:
            schema = {**_SCALARS[kind], **schema}
        return schema
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        inner = (
            _schema(options[0], seen)
            if len(options) == 1
            else {"anyOf": [_schema(a, seen) for a in options]}
        )
        return {"anyOf": [inner, {"type": "null"}]} if len(options) < len(args) else inner
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        item = args[0] if args else Any
        return {"type": "array", "items": _schema(item, seen)}
    if origin is dict or tp is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": _schema(value, seen)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        kinds = {type(v) for v in values}
        base = _SCALARS.get(next(iter(kinds)), {}) if len(kinds) == 1 else {}
        return {**base, "enum": values}
    if isinstance(tp, type) and attrs.has(tp):
        if tp in seen:
            raise SchemaError(
                f"{tp.__name__} refers to itself; recursive schemas are not supported"
            )
        try:
            hints = typing.get_type_hints(tp)
        except NameError as exc:
            raise SchemaError(
                f"cannot resolve the annotations of {tp.__name__}: {exc}; define "
                "the classes it uses at module level"
            ) from None
        properties: dict[str, Any] = {}
        required = []
        for field in attrs.fields(tp):
            prop = _schema(hints.get(field.name, Any), (*seen, tp))
            if description := field.metadata.get("description"):
                prop["description"] = description
            if field.default is attrs.NOTHING:
                required.append(field.name)
            elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                prop["default"] = _jsonable(field.default)
            properties[field.name] = prop
        schema = {
            "type": "object",
            "title": tp.__name__,
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        if tp.__doc__ and not tp.__doc__.startswith(f"{tp.__name__}("):
            schema["description"] = tp.__doc__.strip().split("\n\n")[0]
        return schema
    raise SchemaError(
        f"cannot describe {tp!r} as JSON schema; use attrs classes, str, int, "
        "float, bool, enums, Literal, lists, dicts and Optional"
    )


def _jsonable(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class Target(Generic[T]):
    """What an output must become: ``schema`` for the model, ``check`` for the value.

    ``check(value)`` returns the result or raises :class:`DecodeError` naming the bad field.
    """

    def __init__(self, name: str, schema: dict[str, Any], check: Callable[[Any], T]) -> None:
        self.name, self.schema, self.check = name, schema, check

    def __repr__(self) -> str:
        return f"<Target {self.name}>"

    @classmethod
    def of(cls, kind: type[T], kernel: Kernel) -> Target[T]:
        """The target for an attrs class, checked strictly by the kernel's codec."""
        return cls(kind.__name__, json_schema(kind), lambda value: kernel.codec.load(value, kind))

    @staticmethod
    def json_object(name: str, schema: Mapping[str, Any]) -> Target[dict[str, Any]]:
        """A target that only asks for a JSON object (e.g. tool arguments checked later)."""

        def check(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise DecodeError("", f"expected a JSON object, got {type(value).__name__}")
            missing = [k for k in schema.get("required", ()) if k not in value]
            if missing:
                raise DecodeError(missing[0], "required field is missing")
            return value

        return Target(name, dict(schema), check)

    def parse(self, text: str) -> T:
        """Strict: the text must be JSON (nothing around it) and pass :meth:`check`.
        Raises :class:`NotJSON` or :class:`DecodeError`."""
        try:
            value = strict_loads(text)
        except DecodeError as exc:
            raise NotJSON(exc.problem if not exc.path else str(exc)) from None
        return self.check(value)


def strict_loads(text: str, *, control_characters: bool = False) -> Any:
    """A model's output as JSON with nothing left for the parser to choose: no ``NaN`` or
    ``Infinity`` (not JSON), no key with two values (keeping the last would be a guess), no
    nesting deep enough to overflow the stack. ``control_characters`` allows them raw inside
    strings."""
    return jsontext.loads(text, unique_keys=True, control_characters=control_characters)


class NotJSON(AopkitError, ValueError):
    """The output is not JSON at all (a rule-resolvable fault)."""
