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
        self.overridden: dict[str, list[tuple[str, Any]]] = {}  # name -> [(plugin, object)]

    def add(self, name: str, obj: Any, plugin: str, *, replace: bool = False) -> None:
        """Add ``name``. A name taken by another plugin is a
        :class:`DuplicateRegistrationError` naming both, unless one of the two registered it
        with ``replace=True``: that one wins, whichever loaded first (two overrides clash)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name not in self.objects:
            self.objects[name], self.owners[name] = obj, plugin
            if replace:
                self.overridden[name] = []
            return
        if replace == (name in self.overridden):  # two plain registrations, or two overrides
            raise DuplicateRegistrationError(self.kind, name, self.owners[name], plugin)
        if replace:  # the override comes second: the first steps aside
            self.overridden[name] = [(self.owners[name], self.objects[name])]
            self.objects[name], self.owners[name] = obj, plugin
        else:  # a plain registration after the override: kept aside
            aside = self.overridden[name]
            if aside:
                raise DuplicateRegistrationError(self.kind, name, aside[0][0], plugin)
            aside.append((plugin, obj))

    def drop(self, plugin: str) -> None:
        """Forget everything ``plugin`` contributed; what it overrode comes back."""
        for aside in self.overridden.values():
            aside[:] = [(p, o) for p, o in aside if p != plugin]
        for name in [n for n, owner in self.owners.items() if owner == plugin]:
            del self.objects[name], self.owners[name]
            for previous, obj in self.overridden.pop(name, []):
                self.objects[name], self.owners[name] = obj, previous

    def names_of(self, plugin: str) -> list[str]:
        return [n for n, owner in self.owners.items() if owner == plugin]

    def overridden_by(self, name: str) -> list[str]:
        """The plugins whose ``name`` its current owner overrides (``replace=True``)."""
        return [plugin for plugin, _ in self.overridden.get(name, [])]

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
