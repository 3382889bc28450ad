"""The first-party correctors (fault tier 2): no model call, and never a guess.

Each returns a JSON value or raises :class:`~aopkit.faults.CannotCorrect` saying why; the
pipeline checks the value against the schema before accepting it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aopkit.faults import CannotCorrect

from .scan import cut_problem, spans

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)(?:```|$)", re.S)
_INT = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class Fences:
    """JSON inside code fences or surrounded by chatty text."""

    def correct(self, text: str, schema: dict[str, Any]) -> Any:
        candidates = [m.group(1) for m in _FENCE.finditer(text)] or spans(text)
        for candidate in candidates:
            try:
                return json.loads(candidate)
            except ValueError:
                continue
        partial = candidates[0].strip() if candidates else None
        raise CannotCorrect("no fenced or embedded JSON parses as it is", partial=partial)


class JsonRepair:
    """Syntax repairs with json-repair (trailing commas, single quotes, Python literals, unquoted
    keys, missing closing brackets), refused where a repair would have to invent a value."""

    def correct(self, text: str, schema: dict[str, Any]) -> Any:
        import json_repair

        problem = cut_problem(text)
        if problem:
            raise CannotCorrect(f"the output cannot be completed without guessing: {problem}")
        value = json_repair.loads(text)
        if value in ("", None, {}, []) and text.strip() not in ('""', "null", "{}", "[]"):
            raise CannotCorrect("json-repair found no JSON value in the output")
        invented = _invented(value, text)
        if invented is not None:
            raise CannotCorrect(f"a repair would invent {invented!r}, which the output lacks")
        return value


def _invented(value: Any, text: str) -> Any:
    """The first scalar (or key) of ``value`` that does not appear in ``text``, if any."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not _appears(key, text):
                return key
            found = _invented(item, text)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for item in value:
            found = _invented(item, text)
            if found is not None:
                return found
        return None
    return None if _appears(value, text) else value


def _appears(value: Any, text: str) -> bool:
    if isinstance(value, str):
        if value == "":
            return '""' in text or "''" in text
        return value in text or json.dumps(value, ensure_ascii=False)[1:-1] in text
    if isinstance(value, bool):
        return str(value).lower() in text.lower()
    if value is None:
        return "null" in text or "None" in text
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, (int, float)):
        return (
            str(value) in text
            or repr(value) in text
            or (isinstance(value, float) and value.is_integer() and str(int(value)) in text)
        )
    return True


class Coerce:
    """Type coercion to the schema on valid JSON: numeric strings to numbers, "true"/"false" to
    booleans, whole floats to integers, integers to strings, enum values matched regardless of
    case, and an object wrapped in one extra key unwrapped. Anything else is left to tier 3."""

    def correct(self, text: str, schema: dict[str, Any]) -> Any:
        try:
            value = json.loads(text)
        except ValueError:
            raise CannotCorrect("not JSON, so nothing to coerce") from None
        fixed = _coerce(value, schema)
        if fixed == value and type(fixed) is type(value):
            raise CannotCorrect("no coercion applies")
        return fixed


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    options = schema.get("anyOf")
    if options:
        if value is None and any(o.get("type") == "null" for o in options):
            return None
        for option in options:
            if option.get("type") != "null":
                fixed = _coerce(value, option)
                if fixed is not value:
                    return fixed
        return value
    if "enum" in schema:
        return _enum(value, schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "number":
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            number = float(value)
            return int(number) if _INT.fullmatch(value.strip()) else number
    elif kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind == "string":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif kind == "array" and isinstance(value, list):
        items = schema.get("items", {})
        fixed_items = [_coerce(v, items) for v in value]
        return value if fixed_items == value and _same_types(fixed_items, value) else fixed_items
    elif kind == "object" and isinstance(value, dict):
        return _object(value, schema)
    return value


def _object(value: dict[str, Any], schema: dict[str, Any]) -> Any:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if (
        properties
        and len(value) == 1
        and not set(value) & set(properties)
        and isinstance(inner := next(iter(value.values())), dict)
        and all(k in inner for k in required)
    ):
        value = inner  # {"verdict": {...}} for a schema that describes the inner object
    fixed = {k: _coerce(v, properties[k]) if k in properties else v for k, v in value.items()}
    if fixed == value and all(type(fixed[k]) is type(value[k]) for k in value):
        return value
    return fixed


def _enum(value: Any, choices: list[Any]) -> Any:
    if value in choices or not isinstance(value, str):
        return value
    matches = [c for c in choices if isinstance(c, str) and c.lower() == value.strip().lower()]
    return matches[0] if len(matches) == 1 else value


def _same_types(a: list[Any], b: list[Any]) -> bool:
    return all(type(x) is type(y) for x, y in zip(a, b, strict=True))
