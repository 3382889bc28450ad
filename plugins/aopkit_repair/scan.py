"""A small scanner over JSON-like text: where embedded JSON starts and ends, and how text that
was cut off ends (needed to tell a repairable truncation from a lost value)."""

from __future__ import annotations

import re

OPEN, CLOSE = "{[", "}]"
_WORD_END = re.compile(r"(true|false|null|True|False|None)$")


def spans(text: str) -> list[str]:
    """Balanced ``{...}`` / ``[...]`` spans, outermost, in order; a final unclosed span runs to
    the end of the text."""
    found, i = [], 0
    while i < len(text):
        if text[i] in OPEN:
            end = _match(text, i)
            found.append(text[i:end])
            i = end
        else:
            i += 1
    return found


def _match(text: str, start: int) -> int:
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in OPEN:
            depth += 1
        elif ch in CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def cut_problem(text: str) -> str | None:
    """Why text that ends before its brackets close has lost part of a value, or None when only
    closing brackets (and quotes) are missing and the value can be completed without guessing."""
    depth, quote, escaped = 0, "", False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in OPEN:
            depth += 1
        elif ch in CLOSE:
            depth -= 1
    if quote:
        return "it was cut off inside a string"
    if depth <= 0:
        return None
    tail = text.rstrip()
    last = tail[-1:] if tail else ""
    if last in CLOSE or (last in "\"'" and not _ends_with_key(tail)):
        return None
    if _WORD_END.search(tail):
        return None
    if last.isdigit() or last == ".":
        return "it was cut off after a number, which may be incomplete"
    if last in "\"'":
        return "it was cut off after a key, before its value"
    return f"it was cut off after {last!r}, before a value"


def _ends_with_key(tail: str) -> bool:
    """Whether the final quoted string is an object key (follows '{' or ',' inside an object)."""
    quote = tail[-1]
    start = tail.rfind(quote, 0, len(tail) - 1)
    before = tail[:start].rstrip()
    if not before or before[-1] not in "{,":
        return False
    # ',' separates keys only inside an object: find the innermost open bracket
    depth = 0
    for ch in reversed(before):
        if ch in CLOSE:
            depth += 1
        elif ch in OPEN:
            if depth == 0:
                return ch == "{"
            depth -= 1
    return False
