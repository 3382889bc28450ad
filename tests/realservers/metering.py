"""Counts the model calls (each one HTTP request: these tests do not retry unless they say so)
and the seconds spent in them, per server, for the table in docs/providers.md."""

from __future__ import annotations

from typing import Any

from aopkit import hookimpl
from aopkit.events import ModelCallFinished, Retried


class Meter:
    """An event listener adding a kernel's model calls to a server's totals."""

    def __init__(self, server: Any) -> None:
        self.server = server

    @hookimpl
    def event(self, event: Any) -> None:
        if isinstance(event, ModelCallFinished):
            self.server.requests += 1
            self.server.seconds += event.seconds
        elif isinstance(event, Retried):
            self.server.requests += 1  # the retried attempt was a request too
