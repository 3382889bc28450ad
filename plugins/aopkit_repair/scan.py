"""A small scanner over JSON as models write it (comments, curly or single quotes, escaped
layout): where embedded JSON starts and ends, what a repair may rely on, what a string says
(the backslash rule), and where text was cut off."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

OPEN, CLOSE = "{[", "}]"
OPENERS, CLOSERS = frozenset(OPEN), frozenset(CLOSE)  # membership that fails for ""
QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}
_LAYOUT = frozenset("nrt")  # \n, \r, \t written out between tokens
_FENCE = re.compile(r"(`{3,}|~{3,})[ \t]*(?:[A-Za-z][\w+.-]*)?[ \t]*\r?\n?")
# outside strings and comments JSON has words, numbers, brackets, ':' and ','; anything else
# (an ellipsis, '|', '=', '(', prose punctuation) means the text says more than JSON can hold;
# so do a leading zero (5 or octal?) and another language's literals (null, absent, a number?)
_STRAY = re.compile(r"\.\.|[^\w\s{}\[\]:,.+-]|(?<![\w.])0\d|\b(?:undefined|NaN|Infinity|nil)\b")
# a JSON escape (or \', the quote escape of single-quoted strings); \u runs at once, so that a
# surrogate pair is read as the one character it encodes
_ESCAPE = re.compile(r"(?:\\u[0-9a-fA-F]{4})+|\\[\"'\\/bfnrt]")
_ANY_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_AFTER_NOTHING = frozenset("[{,:")  # a ',' right after one of these leaves out a value
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_MASK, _MASK_END = "\ue000", "\ue001"  # private use: outside strings they are stray
_STAND_IN = re.compile(f"{_MASK}(\\d+){_MASK_END}")


def tokens(text: str, start: int = 0) -> Iterator[tuple[str, int, int]]:
    """``(kind, start, end)`` of each piece of ``text`` from ``start``: "string" (quoted),
    "open-string" (a string the text ends inside), "comment", "layout" (an escaped newline or
    tab between tokens) or "char" (anything else, one at a time)."""
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if ch in QUOTES:
            close, j = QUOTES[ch], i + 1
            while j < n and text[j] != close:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                yield "open-string", i, n
                return
            yield "string", i, j + 1
            i = j + 1
        elif ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield "comment", i, end
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            yield "comment", i, end
            i = end
        elif ch == "\\" and text[i + 1 : i + 2] in _LAYOUT:
            yield "layout", i, i + 2
            i += 2
        else:
            yield "char", i, i + 1
            i += 1


def match(text: str, start: int) -> int | None:
    """The end of the bracketed value that starts at ``start``, or None if it never closes."""
    depth = 0
    for kind, a, b in tokens(text, start):
        if kind == "char":
            if text[a] in OPEN:
                depth += 1
            elif text[a] in CLOSE:
                depth -= 1
                if depth == 0:
                    return b
    return None


def spans(text: str) -> list[str]:
    """Balanced ``{...}`` / ``[...]`` spans, outermost, in order; a final unclosed span runs to
    the end of the text."""
    return [text[a:b] for a, b, _ in _bounds(text)]


def _bounds(text: str) -> list[tuple[int, int, bool]]:
    """``(start, end, closed)`` of each outermost bracketed span."""
    found, i = [], 0
    while i < len(text):
        if text[i] in OPEN:
            end = match(text, i)
            found.append((i, end or len(text), end is not None))
            i = end or len(text)
        else:
            i += 1
    return found


def fenced(text: str) -> list[str]:
    """The contents of code fences, in order; a fence left open runs to the end. JSON in a fence
    ends where its brackets close, and a fence inside a JSON value (in one of its strings, or
    in a value cut off before it closed) is no fence."""
    inside: list[tuple[int, int]] | None = None
    found, i = [], 0
    while m := _FENCE.search(text, i):
        if inside is None:
            inside = [(a, b) for a, b, _ in _bounds(text)]
        if any(a < m.start() < b for a, b in inside):
            i = m.end()
            continue
        marker, start = m.group(1), m.end()
        first = len(text) - len(text[start:].lstrip())
        end = match(text, first) if text[first : first + 1] in OPENERS else None
        close = text.find(marker, end or start)
        if end is None:
            end = close if close >= 0 else len(text)
            first = start
        found.append(text[first:end])
        if close < 0:
            break
        i = close + len(marker)
    return found


def clean(text: str) -> str:
    """``text`` without comments, with escaped layout between tokens as spaces, and every
    quoted string written as the JSON string of what it says (:func:`string_value`): nothing
    a repair could mistake for a value, and no string left for it to read its own way."""
    out = []
    for kind, a, b in tokens(text):
        piece = text[a:b]
        if kind in ("comment", "layout"):
            out.append(" ")
        elif kind == "string":
            out.append(json.dumps(string_value(piece), ensure_ascii=False))
        else:
            out.append(piece)
    return "".join(out)


def masked(text: str) -> tuple[str, list[str]]:
    """``text`` (cleaned) with each string replaced by a numbered stand-in, and the strings:
    json-repair reads strings its own way (it drops their trailing blanks, for one), so it is
    given only the structure, and :func:`unmasked` puts the strings back."""
    out, strings = [], []
    for kind, a, b in tokens(text):
        if kind == "string":
            out.append(f'"{_MASK}{len(strings)}{_MASK_END}"')
            strings.append(string_value(text[a:b]))
        else:
            out.append(text[a:b])
    return "".join(out), strings


def unmasked(value: Any, strings: list[str]) -> Any:
    """``value`` with the stand-ins of :func:`masked` replaced by their strings."""
    if isinstance(value, str):
        return _STAND_IN.sub(lambda m: strings[int(m.group(1))], value)
    if isinstance(value, dict):
        return {unmasked(k, strings): unmasked(v, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [unmasked(v, strings) for v in value]
    return value


def string_value(string: str) -> str:
    """What a quoted string (quotes included) says, by the backslash rule: if every backslash
    in it starts a JSON escape (or ``\\'``), it is read as JSON reads it; if any does not
    (``C:\\path``, ``\\d+``, ``\\alpha``), its author was not writing escapes, and every
    backslash is kept as written, except one before the closing quote character, which is how
    the string's end was found."""
    body, close = string[1:-1], QUOTES[string[0]]
    i = body.find("\\")
    while i >= 0:
        escape = _ESCAPE.match(body, i)
        if escape is None:
            return _ANY_ESCAPE.sub(lambda m: close if m.group(1) == close else m.group(), body)
        i = body.find("\\", escape.end())
    return _ESCAPE.sub(_escaped, body)


def _escaped(m: re.Match[str]) -> str:
    """The character(s) a JSON escape (or a run of ``\\u`` escapes) stands for."""
    escape = m.group()
    if escape[1] == "u":
        decoded: str = json.loads(f'"{escape}"')
        return decoded
    return _ESCAPED.get(escape[1], escape[1])


def stray(text: str) -> str | None:
    """The first thing outside strings and comments that JSON has no place for, if any."""
    outside = "".join(
        text[a:b] if kind == "char" else " " for kind, a, b in tokens(text) if kind != "comment"
    )
    found = _STRAY.search(outside)
    return found.group() if found else None


def unescape(text: str) -> str:
    """``text`` with JSON escapes (``\\u00e9``, ``\\n``, ``\\"``, ``\\'``) decoded, to compare a
    repaired value with what the text says."""
    return _ESCAPE.sub(_escaped, text)


def gap(text: str) -> str | None:
    """Where a value is missing or doubled (``[1, , 2]``, ``"age": }``, ``{"age"}``,
    ``"a" "b",``), or a bracket closes the wrong kind (``[1, 2}``), if anywhere: json-repair
    would drop, fill in or move something, and each is a guess. A missing comma between whole
    entries (``"a": 1 "b": 2``) is not a gap."""
    before, end = "", -1
    entries: list[list[str]] = []  # per open bracket: [bracket, entry so far: "", "k", "k:", "k:v"]
    for kind, a, b in tokens(text):
        if kind in ("comment", "layout") or (kind == "char" and text[a].isspace()):
            continue
        ch = text[a] if kind == "char" else kind
        if ch == "string" or ch.isalnum() or ch in "_.+-":
            touching, end = a == end and before == "value", b
            ch = "value"
            if touching:
                continue  # the rest of a word, or "say "hi" now": inner quotes left unescaped
        if (ch == "," and before in _AFTER_NOTHING) or (ch in CLOSERS and before == ":"):
            return f"there is no value between {before!r} and {ch!r}"
        top = entries[-1] if entries else None
        if ch == "," or ch in CLOSERS:
            if top is not None and top[0] == "{" and top[1] == "k":
                return f"a key without a value, or a second value, before {ch!r}"
            if ch == "," and top is not None:
                top[1] = ""
            elif ch != "," and top is not None:
                if OPEN.index(top[0]) != CLOSE.index(ch):
                    return f"{ch!r} closes the {'object' if top[0] == '{' else 'list'}"
                entries.pop()
        elif top is not None and top[0] == "{":
            if ch == ":":
                top[1] = "k:" if top[1] == "k" else top[1]
            else:
                top[1] = "k:v" if top[1] == "k:" else "k"
        if ch in OPENERS:
            entries.append([ch, ""])
        before = ch
    return None


def cut_off(text: str) -> str | None:
    """Where ``text`` ends inside a value, if it does: inside a string, or with a list or an
    object still open. Whatever followed is lost, so the value can never be known complete;
    not even when only closing brackets seem to be missing. (Brackets that do not match, as in
    ``[1, 2}``, are another fault: see :func:`gap`.)"""
    opened: list[int] = []
    for kind, a, _ in tokens(text):
        if kind == "open-string":
            return f"inside the string {_start(text, a)}"
        if kind == "char" and text[a] in OPEN:
            opened.append(a)
        elif (
            kind == "char"
            and text[a] in CLOSE
            and opened
            and OPEN.index(text[opened.pop()]) != CLOSE.index(text[a])
        ):
            return None
    if not opened:
        return None
    what = "object" if text[opened[-1]] == "{" else "list"
    return f"inside the {what} {_start(text, opened[-1])}"


def _start(text: str, at: int) -> str:
    start = text[at : at + 24]
    return f"that starts {start!r}" if len(start) < 24 else f"that starts {start + '…'!r}"
