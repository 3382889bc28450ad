"""Named registries that remember which plugin contributed each entry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .errors import DuplicateRegistrationError, LookupFailed


class Registry:
    """``name -> object`` for one kind of contribution (block types, models, tools...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.objects: dict[str, Any] = {}
        self.owners: dict[str, str] = {}

    def add(self, name: str, obj: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self.objects:
            raise DuplicateRegistrationError(self.kind, name, self.owners[name], plugin)
        self.objects[name] = obj
        self.owners[name] = plugin

    def drop(self, plugin: str) -> None:
        """Forget everything ``plugin`` contributed."""
        for name in [n for n, owner in self.owners.items() if owner == plugin]:
            del self.objects[name], self.owners[name]

    def names_of(self, plugin: str) -> list[str]:
        return [n for n, owner in self.owners.items() if owner == plugin]

    def __getitem__(self, name: str) -> Any:
        try:
            return self.objects[name]
        except KeyError:
            known = ", ".join(sorted(self.objects)) or "none"
            raise LookupFailed(
                f"no {self.kind} named {name!r} is registered (known: {known}); "
                "is the plugin that provides it installed and not blocked?"
            ) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self.objects.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.objects

    def __iter__(self) -> Iterator[str]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)
