"""Secrets (API keys, tokens) that never show up in reprs, logs, events or exception texts."""

from __future__ import annotations

from typing import Any


class Secret:
    """A string that prints as ``'***'``; :meth:`reveal` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # picklable (Ray ships models to actors), still never printed
        return (Secret, (self._value,))


def redact(text: str, *secrets: Secret | str | None) -> str:
    """``text`` with every occurrence of the given secrets replaced by ``***``."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, "***")
    return text
