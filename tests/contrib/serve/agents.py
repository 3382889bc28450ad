"""Agents for the serve tests: each reply shows what the agent remembers, so a conversation
that saw another's messages (or lost its own) shows it."""

from __future__ import annotations

import asyncio

import aopkit
from aopkit.events import ReplyChunk


class Recall(aopkit.Agent):
    """Replies with every user text it remembers, joined by ``|``; streams it in two chunks.
    A user text ``sleep:<seconds>`` makes it wait that long first (to be cancelled or raced)."""

    description = "Recalls what you said."

    async def reply(self, msg: aopkit.Msg | list[aopkit.Msg] | None) -> aopkit.Msg:
        said = [m.text for m in self.memory if m.role == "user"]
        if said and said[-1].startswith("sleep:"):
            await asyncio.sleep(float(said[-1].removeprefix("sleep:")))
        text = "|".join(said)
        if self.kernel.observed:
            self.kernel.emit(ReplyChunk(agent=self.name, text=text[: len(text) // 2]))
            await asyncio.sleep(0)
            self.kernel.emit(ReplyChunk(agent=self.name, text=text))
        return aopkit.Msg(self.name, text, "assistant")


async def held(store: aopkit.SQLiteStore, name: str) -> None:
    """Return once someone holds the claim ``name`` (a turn has begun)."""
    while True:
        try:
            async with store.claim(name):
                pass  # free: taken and given back at once, so the turn can take it
        except aopkit.Claimed:
            return
        await asyncio.sleep(0.01)


recall = Recall("recall")
