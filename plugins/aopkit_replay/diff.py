"""What separates two canonical requests, said as paths: ``messages[3].content: recorded 'hello',
got 'hullo'``. Used only when a request misses the cassette, so it favours clarity over speed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs

SHOWN = 60  # characters of a value shown in a difference
NOTHING = object()  # the side of a difference where a field or item is missing


@attrs.frozen
class Difference:
    path: str
    recorded: Any
    got: Any

    def __str__(self) -> str:
        recorded, got = self.recorded, self.got
        if isinstance(recorded, str) and isinstance(got, str):
            recorded, got = _around_first_change(recorded, got)
        return f"{self.path}: recorded {_show(recorded)}, got {_show(got)}"

    @property
    def size(self) -> int:
        """Roughly how many characters changed: how the closest recorded request is chosen."""
        a, b = self.recorded, self.got
        if isinstance(a, str) and isinstance(b, str):
            same = _common_prefix(a, b)
            same += _common_prefix(a[same:][::-1], b[same:][::-1])
            return len(a) + len(b) - 2 * same
        return sum(len(json.dumps(v, default=str)) for v in (a, b) if v is not NOTHING)


def differences(recorded: Any, got: Any, path: str = "") -> Iterator[Difference]:
    """Every difference between two JSON values, depth first, in the order of their fields."""
    if isinstance(recorded, dict) and isinstance(got, dict):
        for key in [*recorded, *(k for k in got if k not in recorded)]:
            where = f"{path}.{key}" if path else key
            yield from differences(recorded.get(key, NOTHING), got.get(key, NOTHING), where)
    elif isinstance(recorded, list) and isinstance(got, list):
        if path == "tools" and _names(recorded) != _names(got):
            yield Difference(path, _names(recorded), _names(got))
            return
        for i in range(max(len(recorded), len(got))):
            yield from differences(
                recorded[i] if i < len(recorded) else NOTHING,
                got[i] if i < len(got) else NOTHING,
                f"{path}[{i}]",
            )
    elif type(recorded) is not type(got) or recorded != got:
        yield Difference(path, recorded, got)


def _show(value: Any) -> str:
    if value is NOTHING:
        return "nothing"
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _names(tools: list[Any]) -> list[Any]:
    return [t.get("name") if isinstance(t, dict) else t for t in tools]


def _common_prefix(a: str, b: str) -> int:
    pairs = enumerate(zip(a, b, strict=False))
    return next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))


def _around_first_change(a: str, b: str) -> tuple[str, str]:
    """Long strings that differ far from their start are shown from just before the change."""
    start = max(0, _common_prefix(a, b) - 20)
    if start < 10:
        return a, b
    return "..." + a[start:], "..." + b[start:]
