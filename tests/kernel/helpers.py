"""Small agents and listeners the kernel tests share."""

from __future__ import annotations

import asyncio

from aopkit import Agent, Msg, hookimpl


class Echo(Agent):
    """Replies with the text it got, prefixed by its name."""

    async def reply(self, msg):
        text = msg.text if isinstance(msg, Msg) else ""
        return Msg(self.name, f"{self.name}: {text}", "assistant")


class Slow(Agent):
    """Waits ``delay`` seconds (or until interrupted) before replying."""

    def __init__(self, name, delay, **kwargs):
        super().__init__(name, **kwargs)
        self.delay = delay
        self.started = asyncio.Event()

    async def reply(self, msg):
        self.started.set()
        await asyncio.sleep(self.delay)
        return Msg(self.name, "slow answer", "assistant")


class Failing(Agent):
    async def reply(self, msg):
        raise ValueError("model returned nonsense")


class Recorder:
    """An event listener that keeps every event."""

    def __init__(self):
        self.events = []

    @hookimpl
    def event(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]
