"""``aopkit run --studio [--port N]``: a Studio for each kernel of the run, served from a
background thread with its own event loop, so the program keeps its own loop (``asyncio.run``
inside a script works as usual) and the Studio outlives it until the person is done."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import Any

import aopkit
from aopkit.events import Event
from aopkit.faults import Incident, Resolution

from .server import Studio


class StudioRun:
    """The first kernel's Studio gets ``port``, later ones any free port. Incidents go to the
    page only when a person is at the terminal (else nobody could answer them)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.interactive = sys.stdin is not None and sys.stdin.isatty()
        self.studios: list[Studio] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="aopkit-studio", daemon=True
        )
        self.thread.start()

    def attach(self, kernel: aopkit.Kernel) -> None:
        port = 0 if self.studios else self.port
        studio = _ThreadedStudio(kernel, self.loop, port=port, incidents=self.interactive)
        asyncio.run_coroutine_threadsafe(studio.start(), self.loop).result()
        self.studios.append(studio)

    def finish(self) -> None:
        try:
            if self.studios and self.interactive:
                input("\nThe run is over. Press Enter to stop the Studio. ")
        except (EOFError, OSError, KeyboardInterrupt):  # no more input, or Ctrl-C: stop
            pass
        finally:
            for studio in self.studios:
                asyncio.run_coroutine_threadsafe(studio.stop(), self.loop).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


class _ThreadedStudio(Studio):
    """A Studio whose kernel runs on another thread: events and incidents cross over."""

    def __init__(self, kernel: aopkit.Kernel, loop: asyncio.AbstractEventLoop, **options: Any):
        super().__init__(kernel, **options)
        self.loop = loop

    def hooks(self) -> object:
        return _Relay(self)


class _Relay:
    """Registered in the program's kernel; hands each event and incident to the Studio's loop."""

    def __init__(self, studio: _ThreadedStudio) -> None:
        self.studio = studio

    @aopkit.hookimpl
    def event(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: the Studio has stopped
            self.studio.loop.call_soon_threadsafe(self.studio.event, event)

    @aopkit.hookimpl
    def escalate(self, incident: Incident) -> Any:
        if not self.studio.take_incidents:
            return None
        asked = asyncio.run_coroutine_threadsafe(self._ask(incident), self.studio.loop)
        return asyncio.wrap_future(asked)

    async def _ask(self, incident: Incident) -> Resolution | None:
        waiting = self.studio.escalate(incident)
        return None if waiting is None else await waiting
