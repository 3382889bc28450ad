"""JSON text both ways, strictly, so that whatever loads also dumps, and the other way round.

Refused in both directions, with the path of the bad value: ``NaN`` and ``Infinity`` (not JSON:
other parsers, browsers and databases reject them), lone surrogates (UTF-8 cannot encode them,
so such a string loads but cannot be written to a file), and nesting deeper than
:data:`MAX_DEPTH` (the parser would run out of stack). The checks cost a character scan; the
value is walked only when the scan finds a suspect.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import DecodeError, EncodeError, join_path

MAX_DEPTH = 100
"""Objects and arrays nested deeper than this are refused."""

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


class _NotANumber(Exception):
    pass


def _constant(name: str) -> float:
    raise _NotANumber(name)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotANumber(text)
    return number


def _could_be_deep(text: str, check_depth: bool) -> bool:
    return check_depth and text.count("{") + text.count("[") > MAX_DEPTH


def loads(
    text: str | bytes,
    *,
    check_depth: bool = True,
    unique_keys: bool = False,
    control_characters: bool = False,
) -> Any:
    """The value of a JSON text; :class:`DecodeError` naming the path of what is wrong.

    ``check_depth=False`` skips the walk that enforces :data:`MAX_DEPTH` on texts with many
    brackets (a store's file of many messages): nesting is then only limited by the stack.
    ``unique_keys`` refuses an object with two values for one key (Python keeps the last: a
    guess); ``control_characters`` allows them raw inside strings."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("", f"not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(text, str):
        raise TypeError(f"JSON text is a str or bytes, not {type(text).__name__}")
    try:
        if text.startswith("\ufeff"):
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        value = _DECODERS[not control_characters, unique_keys].decode(text)
    except _NotANumber as exc:
        path = _path_of_number(text)
        why = f"{exc} is not a JSON number (NaN and Infinity are refused)"
        raise DecodeError(path, why) from None
    except RecursionError:
        raise DecodeError("", _TOO_DEEP) from None
    except ValueError as exc:
        raise DecodeError("", f"not valid JSON: {exc}") from None
    if _could_be_deep(text, check_depth) or _surrogate_in(text, escaped=True):
        found = problem(value, check_depth=check_depth)
        if found is not None:
            raise DecodeError(*found)
    return value


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} has two values in one object")
        seen.add(key)
    return dict(pairs)


# made once, not per call as json.loads and json.dumps with options make them
_DECODERS = {
    (strict, unique): json.JSONDecoder(
        strict=strict,
        parse_constant=_constant,
        parse_float=_finite,
        object_pairs_hook=_one_value_per_key if unique else None,
    )
    for strict in (True, False)
    for unique in (True, False)
}
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def dumps(value: Any, *, check_depth: bool = True) -> str:
    """Compact JSON text of ``value``; :class:`EncodeError` naming the path of a value that
    JSON cannot hold or that :func:`loads` would refuse (with the same ``check_depth``)."""
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        found = problem(value)
        raise EncodeError(*(found or ("", str(exc)))) from None
    if _could_be_deep(text, check_depth) or _surrogate_in(text, escaped=False):
        found = problem(value, check_depth=check_depth)
        if found is not None:
            raise EncodeError(*found)
    return text


def _surrogate_in(text: str, *, escaped: bool) -> bool:
    """Whether ``text`` may hold a lone surrogate: a raw one, or (``escaped``) one written as
    a ``\\uD8xx``-``\\uDFxx`` escape. Cheap on the common text: an ASCII string holds no raw
    surrogate (``isascii`` reads a flag), and without ``\\u`` there is no escape."""
    if escaped and "\\u" in text and _ESCAPED_SURROGATE.search(text):
        return True
    return not text.isascii() and _LONE_SURROGATE.search(text) is not None


def problem(value: Any, *, check_depth: bool = True) -> tuple[str, str] | None:
    """``(path, what is wrong)`` of the first value in ``value`` that is not strict JSON."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth >= MAX_DEPTH and check_depth:
                return path, f"{_TOO_DEEP} (or it contains itself)"
            if isinstance(item, dict):
                for key, inner in item.items():
                    if not isinstance(key, str):
                        return path, f"object key {key!r} is not a string"
                    if _LONE_SURROGATE.search(key):
                        return path, f"key {key!r} holds a lone surrogate"
                    stack.append((inner, join_path(path, key), depth + 1))
            else:
                stack.extend((inner, f"{path}[{i}]", depth + 1) for i, inner in enumerate(item))
        elif isinstance(item, str):
            if not item.isascii() and (found := _LONE_SURROGATE.search(item)) is not None:
                return path, (
                    f"lone surrogate {found.group()!r} at character {found.start()}: "
                    "UTF-8 cannot encode it"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path, f"{item} is not a JSON number (NaN and Infinity are refused)"
        elif item is not None and not isinstance(item, (bool, int)):
            return path, f"a Python {type(item).__name__} is not a JSON value"
    return None


def _path_of_number(text: str) -> str:
    try:
        found = problem(json.loads(text))  # this time NaN and Infinity load, to be found
    except (ValueError, RecursionError):
        return ""
    return found[0] if found else ""
