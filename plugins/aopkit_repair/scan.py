"""A small scanner over JSON as models write it (comments, curly or single quotes, escaped
layout): where embedded JSON starts and ends, what a repair may rely on, and how text that was
cut off ends (needed to tell a repairable truncation from a lost value)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

OPEN, CLOSE = "{[", "}]"
OPENERS, CLOSERS = frozenset(OPEN), frozenset(CLOSE)  # membership that fails for ""
QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}
_LAYOUT = frozenset("nrt")  # \n, \r, \t written out between tokens
_FENCE = re.compile(r"(`{3,}|~{3,})[ \t]*(?:[A-Za-z][\w+.-]*)?[ \t]*\r?\n?")
_LITERAL = re.compile(r"true|false|null|True|False|None")
_WORD_END = re.compile(r"[\w.+-]+$")
_NUMBERISH = re.compile(r"[-+]?[\d.][\d.]*([eE][-+]?\d*)?|[-+]")
# outside strings and comments JSON has words, numbers, brackets, ':' and ','; anything else
# (an ellipsis, '|', '=', '(', prose punctuation) means the text says more than JSON can hold
_STRAY = re.compile(r"\.\.|[^\w\s{}\[\]:,.+-]")
_UNICODE_RUN = re.compile(r"(?:\\u[0-9a-fA-F]{4})+")
_ESCAPE = re.compile(r"\\([\"'\\/bfnrt])")
_AFTER_NOTHING = frozenset("[{,:")  # a ',' right after one of these leaves out a value
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


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
    ends where its brackets close, and a fence inside a string of a JSON value is no fence."""
    inside: list[tuple[int, int]] | None = None
    found, i = [], 0
    while m := _FENCE.search(text, i):
        if inside is None:
            inside = [(a, b) for a, b, closed in _bounds(text) if closed]
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
    """``text`` without comments, with escaped layout between tokens as spaces and curly quotes
    around strings made straight: nothing a repair could mistake for a value."""
    out = []
    for kind, a, b in tokens(text):
        piece = text[a:b]
        if kind in ("comment", "layout"):
            out.append(" ")
        elif kind != "char" and piece[0] in "“‘":
            closed = kind == "string"
            body = piece[1 : -1 if closed else None].replace('"', '\\"')
            out.append(f'"{body}"' if closed else f'"{body}')
        else:
            out.append(piece)
    return "".join(out)


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

    def unicode(m: re.Match[str]) -> str:
        decoded: str = json.loads(f'"{m.group()}"')
        return decoded

    text = _UNICODE_RUN.sub(unicode, text)
    return _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), text)


def gap(text: str) -> str | None:
    """Where a value is missing or doubled (``[1, , 2]``, ``"age": }``, ``{"age"}``,
    ``"a" "b",``), if anywhere: json-repair would drop or fill in something, and either is a
    guess. A missing comma between whole entries (``"a": 1 "b": 2``) is not a gap."""
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
            elif ch != "," and entries:
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


def cut_problem(text: str) -> str | None:
    """Why text that ends before its brackets close has lost part of a value, or None when only
    closing brackets are missing and the value can be completed without guessing."""
    stack: list[str] = []
    last: tuple[str, int, int] | None = None
    before: tuple[str, int, int] | None = None
    for token in tokens(text):
        kind, a, _ = token
        if kind == "open-string":
            return "it was cut off inside a string"
        if kind in ("comment", "layout") or (kind == "char" and text[a].isspace()):
            continue
        if kind == "char" and text[a] in OPEN:
            stack.append(text[a])
        elif kind == "char" and text[a] in CLOSE and stack:
            stack.pop()
        before, last = last, token
    if not stack or last is None:
        return None
    kind, a, b = last
    if kind == "string":
        key = before is not None and before[0] == "char" and text[before[1]] in "{,"
        if key and (text[before[1]] == "{" or stack[-1] == "{"):
            return "it was cut off after a key, before its value"
        return None
    if text[a] in CLOSE:
        return None
    word = _WORD_END.search(text, 0, b)
    if word is None:
        return f"it was cut off after {text[a]!r}, before a value"
    if _LITERAL.fullmatch(word.group()):
        return None
    if _NUMBERISH.fullmatch(word.group()):
        return "it was cut off after a number, which may be incomplete"
    return f"it was cut off after {word.group()!r}, which may be incomplete"
