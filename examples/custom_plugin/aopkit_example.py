"""An example third-party plugin, installed as its own distribution (see pyproject.toml).

It contributes, through aopkit's hooks:
- a model provider ``parrot:<anything>`` that repeats the last user message (no network);
- a block type ``example.rating`` (stars out of five);
- a corrector ``strip-bom`` for output that starts with a byte-order mark;
- an event sink that counts events by type (register it where you want it counted:
  ``kernel.register(EventCounter(), "counter")``).
"""

from __future__ import annotations

import json
from collections import Counter

import attrs

import aopkit
from aopkit.faults import CannotCorrect
from aopkit.models import ChatModel, ChatResponse, Usage


class ParrotModel(ChatModel):
    """Repeats the last user message: a provider in twenty lines."""

    provider = "parrot"

    async def _complete(self, *, messages, tools, tool_choice, structured):
        last = next((m.text for m in reversed(messages) if m.role == "user"), "")
        return ChatResponse([aopkit.TextBlock(last)], Usage(len(messages), 1), "stop")

    async def _stream(self, *, messages, tools, tool_choice, structured):
        yield await self._complete(
            messages=messages, tools=tools, tool_choice=tool_choice, structured=structured
        )


@attrs.frozen
class RatingBlock(aopkit.Block):
    """A rating a UI can draw as stars."""

    type = "example.rating"
    stars: int
    out_of: int = 5


class StripBOM:
    """Output that starts with a byte-order mark: drop it and parse the rest."""

    name = "strip-bom"

    def correct(self, text, schema):
        if not text.startswith("\ufeff"):
            raise CannotCorrect("no byte-order mark")
        try:
            return json.loads(text[1:])
        except ValueError:
            raise CannotCorrect("not JSON after the byte-order mark", partial=text[1:]) from None


class EventCounter:
    """Counts every event by type."""

    def __init__(self):
        self.counts = Counter()

    @aopkit.hookimpl
    def event(self, event):
        self.counts[event.type] += 1


@aopkit.hookimpl
def register_models(register):
    register("parrot", ParrotModel)


@aopkit.hookimpl
def register_block_types(register):
    register(RatingBlock)


@aopkit.hookimpl
def register_correctors(register):
    register("strip-bom", StripBOM())
