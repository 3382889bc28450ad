"""The first-party correctors (fault tier 2): no model call, and never a guess.

Each returns a JSON value or raises :class:`~aopkit.faults.CannotCorrect` saying why; the
pipeline checks the value against the schema before accepting it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aopkit.faults import CannotCorrect, CutOff
from aopkit.structured import strict_loads

from .scan import (
    OPENERS,
    clean,
    cut_off,
    fenced,
    gap,
    masked,
    spans,
    stray,
    unescape,
    unmasked,
)

_INT = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TOKEN = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\w+")


class Fences:
    """JSON inside code fences, surrounded by chatty text, or encoded as a JSON string. Only
    parts that could be the schema's kind of value count; several that differ are refused."""

    name = "fences"

    def correct(self, text: str, schema: dict[str, Any]) -> Any:
        text = _decoded(text)
        found = fenced(text) or spans(text)
        candidates = [c.strip() for c in found if _may_be(c.strip(), schema)]
        if not candidates:
            raise CannotCorrect("no fenced or embedded JSON of the kind the schema asks for")
        if len(candidates) == 1:
            try:
                return strict_loads(candidates[0], control_characters=True)
            except ValueError:
                _refuse_cut_off(candidates[0])
                raise CannotCorrect(
                    "the fenced or embedded JSON does not parse as it is", partial=candidates[0]
                ) from None
        values = []
        for candidate in candidates:
            try:
                values.append(strict_loads(candidate, control_characters=True))
            except ValueError:
                _refuse_cut_off(candidate)
                raise CannotCorrect(
                    f"{len(candidates)} fenced or embedded JSON values, not all valid: "
                    "which one is meant would be a guess"
                ) from None
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            raise CannotCorrect(
                f"{len(candidates)} different fenced or embedded JSON values: "
                "which one is meant would be a guess"
            )
        return values[0]


def _refuse_cut_off(text: str) -> None:
    """Raise :class:`CutOff` if ``text`` ends inside a value: no corrector may complete it."""
    where = cut_off(text)
    if where is not None:
        raise CutOff(
            f"the output was cut off {where}: what followed is lost, so the value cannot be "
            "known complete"
        )


def _decoded(text: str) -> str:
    """JSON that was encoded as a JSON string (with or without its quotes), decoded once."""
    stripped = text.strip()
    if stripped.startswith('"'):
        try:
            value = strict_loads(stripped, control_characters=True)
        except ValueError:
            return text
        return value if isinstance(value, str) and value.lstrip()[:1] in OPENERS else text
    if '\\"' in stripped and '"' not in stripped.replace('\\"', ""):
        try:
            decoded: str = strict_loads(f'"{stripped}"', control_characters=True)
        except ValueError:
            return text
        return decoded
    return text


def _may_be(candidate: str, schema: dict[str, Any]) -> bool:
    """Whether a fenced or embedded part could be the value: an array for an array schema, an
    object for an object schema (with a ':' unless empty, so that a ``{placeholder}`` in prose
    is not one)."""
    kind = schema.get("type")
    if kind == "array":
        return candidate.startswith("[")
    if kind == "object" or candidate.startswith("{"):
        return candidate.startswith("{") and (":" in candidate or candidate[1:-1].strip() == "")
    return candidate[:1] in OPENERS


class JsonRepair:
    """Syntax repairs with json-repair (trailing commas, single or curly quotes, Python literals,
    unquoted keys, comments, escaped layout), refused where a repair would have to complete
    output that was cut off, invent a value or drop part of the text. Strings are read by the
    backslash rule (:func:`~aopkit_repair.scan.string_value`) before json-repair sees them."""

    name = "json-repair"

    def correct(self, text: str, schema: dict[str, Any]) -> Any:
        import json_repair

        try:
            strict_loads(text)
        except ValueError:
            pass
        else:
            raise CannotCorrect("the output is valid JSON: there is no syntax to repair")
        _refuse_cut_off(text)
        text = clean(text)
        odd = stray(text)
        if odd is not None:
            raise CannotCorrect(f"the output has {odd!r} where JSON has no place for it")
        problem = gap(text)
        if problem:
            raise CannotCorrect(f"the output cannot be repaired without guessing: {problem}")
        if len(spans(text)) > 1:
            raise CannotCorrect(
                "the output holds several JSON values: which one is meant is a guess"
            )
        structure, strings = masked(text)
        value = unmasked(json_repair.loads(structure), strings)
        if value in ("", None, {}, []) and text.strip() not in ('""', "null", "{}", "[]"):
            raise CannotCorrect("json-repair found no JSON value in the output")
        said = unescape(text)
        invented = _invented(value, text, said)
        if invented is not None:
            raise CannotCorrect(f"a repair would invent {invented!r}, which the output lacks")
        dropped = _dropped(value, said)
        if dropped is not None:
            raise CannotCorrect(f"a repair would drop {dropped!r}, which the output has")
        return value


def _invented(value: Any, text: str, said: str) -> Any:
    """The first scalar (or key) of ``value`` that does not appear in ``text``, if any."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not _appears(key, text, said):
                return key
            found = _invented(item, text, said)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for item in value:
            found = _invented(item, text, said)
            if found is not None:
                return found
        return None
    return None if _appears(value, text, said) else value


def _appears(value: Any, text: str, said: str) -> bool:
    """Whether ``text`` (or ``said``, the text with its escapes decoded) spells ``value``."""
    if isinstance(value, str):
        if value == "":
            return '""' in text or "''" in text
        return value in text or value in said
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


def _dropped(value: Any, said: str) -> str | None:
    """The first word or number of the text that the repaired value lost, if any: json-repair
    drops a key without a value, the second of two values, or a second object, silently."""
    words: set[str] = set()
    numbers: set[float] = set()
    _spellings(value, words, numbers)
    for token in _TOKEN.findall(said):
        if token in words:
            continue
        try:
            if float(token) in numbers or token.lstrip("+-") in words:
                continue
        except ValueError:
            pass
        return token
    return None


def _spellings(value: Any, words: set[str], numbers: set[float]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            words.update(_TOKEN.findall(key))
            _spellings(item, words, numbers)
    elif isinstance(value, list):
        for item in value:
            _spellings(item, words, numbers)
    elif isinstance(value, str):
        words.update(_TOKEN.findall(value))
    elif isinstance(value, bool):
        words.update((str(value), str(value).lower()))
    elif value is None:
        words.update(("null", "None"))
    elif isinstance(value, (int, float)):
        numbers.add(float(value))


class Coerce:
    """Type coercion to the schema on valid JSON: numeric strings to numbers, "true"/"false" to
    booleans, whole floats to integers, integers to strings, enum values matched regardless of
    case, an object or array encoded as a JSON string decoded, and an object wrapped in one
    extra key unwrapped. Anything else is left to tier 3."""

    name = "coerce"

    def correct(self, text: str, schema: dict[str, Any]) -> Any:
        try:
            value = strict_loads(text)
        except ValueError:
            raise CannotCorrect("not JSON, so nothing to coerce") from None
        fixed = _coerce(value, schema, schema)
        if fixed is value:
            raise CannotCorrect("no coercion applies")
        return fixed


def _coerce(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """``value`` made to fit ``schema`` where a rule says how; ``value`` itself (the same
    object) where nothing applies, which is how callers tell that nothing changed."""
    schema = _followed(schema, root)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        if value is None and any(o.get("type") == "null" for o in options):
            return value
        for option in options:
            if option.get("type") != "null":
                fixed = _coerce(value, option, root)
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
    elif kind == "array":
        value = _json_in_string(value, list)
        if isinstance(value, list):
            items = schema.get("items", {})
            fixed = [_coerce(v, items, root) for v in value]
            return value if all(f is v for f, v in zip(fixed, value, strict=True)) else fixed
    elif kind == "object":
        value = _json_in_string(value, dict)
        if isinstance(value, dict):
            return _object(value, schema, root)
    return value


def _followed(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its local references followed (pydantic puts nested models in
    ``$defs``, older versions behind a one-part ``allOf``); a reference that leads nowhere or
    back to itself leaves nothing to coerce to."""
    seen: set[str] = set()
    while True:
        parts = schema.get("allOf")
        if isinstance(parts, list) and len(parts) == 1 and isinstance(parts[0], dict):
            schema = {**{k: v for k, v in schema.items() if k != "allOf"}, **parts[0]}
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            return {}
        seen.add(ref)
        node: Any = root
        for token in ref[2:].split("/"):
            key = token.replace("~1", "/").replace("~0", "~")
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return {}
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}


def _json_in_string(value: Any, kind: type) -> Any:
    """The object or array a string holds as JSON (``"{\\"a\\": 1}"``), else ``value``."""
    if not isinstance(value, str):
        return value
    try:
        decoded = strict_loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, kind) else value


def _object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> Any:
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
    fixed = {k: _coerce(v, properties[k], root) if k in properties else v for k, v in value.items()}
    return value if all(fixed[k] is value[k] for k in value) else fixed


def _enum(value: Any, choices: list[Any]) -> Any:
    if value in choices or not isinstance(value, str):
        return value
    matches = [c for c in choices if isinstance(c, str) and c.lower() == value.strip().lower()]
    return matches[0] if len(matches) == 1 else value
