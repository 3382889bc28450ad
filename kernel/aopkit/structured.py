"""Structured output: targets that validate a JSON value (schemas come from :mod:`.schema`).

A :class:`Target` pairs the schema a model is shown with the strict check that turns a JSON
value into what the caller wants (an instance of a class, or tool arguments). Checks never coerce:
repairing is the correctors' job (fault tier 2), and they must say when they cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import jsontext
from .errors import AopkitError, DecodeError
from .schema import SchemaError, json_schema

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["NotJSON", "SchemaError", "Target", "json_schema", "strict_loads"]

T = TypeVar("T")


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
        """The target for an attrs class, a dataclass or a pydantic model (anything
        :func:`~aopkit.schema.json_schema` describes), checked strictly by the kernel's codec."""
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
