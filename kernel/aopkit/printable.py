"""Text from programs and models made safe to print on a terminal: control characters (escape
sequences that move the cursor, clear the screen, retitle the window, or reorder a line) are
shown escaped (``\\x1b``), never sent to the terminal."""

from __future__ import annotations

import re

_BIDI = "\u202a-\u202e\u2066-\u2069"  # direction overrides: make a line read otherwise
_CONTROLS = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")  # keeps tabs and newlines
_CONTROLS_AND_NEWLINES = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")


def printable(text: str) -> str:
    """``text`` with every control character except tabs and newlines escaped."""
    return _CONTROLS.sub(_escaped, text)


def cell(text: str, limit: int = 60) -> str:
    """``text`` as one table cell: every control character escaped, at most ``limit``
    characters (cut with an ellipsis)."""
    text = _CONTROLS_AND_NEWLINES.sub(_escaped, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escaped(found: re.Match[str]) -> str:
    return found.group().encode("unicode_escape").decode("ascii")
