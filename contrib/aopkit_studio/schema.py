"""A small JSON-schema check for answers typed in the page, so a wrong answer is refused with a
precise message before the waiting agent ever sees it.

It covers what :func:`aopkit.structured.json_schema` produces: ``type``, ``properties``,
``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, ``anyOf``/``oneOf`` and
local ``$ref``. Keywords it does not know are ignored (the kernel re-checks every answer).
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "null": type(None),
}


def problem(value: Any, schema: dict[str, Any] | None) -> str | None:
    """What is wrong with ``value`` for ``schema`` ("at <path>: ..."), or None if it fits."""
    if not schema:
        return None
    return _check(value, schema, schema, "$")


def _is(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    expected = _TYPES.get(kind)
    return expected is None or isinstance(value, expected)


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _check(value, target, root, path)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        problems = [_check(value, option, root, path) for option in options]
        if all(problems):
            return next(p for p in problems if p)
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    if kinds and not any(_is(value, k) for k in kinds):
        return f"at {path}: expected {' or '.join(kinds)}, got {_name(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"at {path}: expected one of {schema['enum']!r}, got {value!r:.60}"
    if "const" in schema and value != schema["const"]:
        return f"at {path}: expected {schema['const']!r}, got {value!r:.60}"
    if isinstance(value, dict):
        return _check_object(value, schema, root, path)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if found := _check(item, schema["items"], root, f"{path}[{i}]"):
                return found
    return None


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], path: str
) -> str | None:
    for key in schema.get("required", ()):
        if key not in value:
            return f"at {path}.{key}: required field is missing"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            found = _check(item, properties[key], root, f"{path}.{key}")
        elif extra is False:
            found = f"at {path}: unexpected field {key!r}"
        elif isinstance(extra, dict):
            found = _check(item, extra, root, f"{path}.{key}")
        else:
            found = None
        if found:
            return found
    return None


def _name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, dict) else type(value).__name__
    )
