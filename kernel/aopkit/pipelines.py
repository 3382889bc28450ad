"""Pipelines: common ways to chain agents."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .durable import durable as durable_run
from .errors import ConfigurationError
from .hub import _agents
from .message import Msg, as_input

if TYPE_CHECKING:
    from .agent import Agent, Input
    from .session import JournalStore


async def sequential(
    agents: Iterable[Agent],
    msg: Input = None,
    *,
    durable: JournalStore | None = None,
    run: str | None = None,
) -> Msg | None:
    """Each agent replies to the previous one's reply; returns the last reply. ``msg`` may
    be a ``str`` (a user message). ``durable=store, run="id"`` makes it a durable run (see
    :mod:`aopkit.durable`): run again with the same id, it resumes."""
    found = _agents(agents, "sequential(agents)")
    current = as_input(msg, "sequential(msg)")
    if (durable is None) != (run is None):
        raise ConfigurationError("sequential: give durable= (a store) and run= (an id) together")
    async with durable_run(durable, run) if durable and run else contextlib.nullcontext():
        for agent in found:
            current = await agent(current)
    return current if isinstance(current, Msg) else None


async def fanout(agents: Iterable[Agent], msg: Input = None) -> list[Msg]:
    """All agents reply to ``msg`` (a ``str`` is a user message) concurrently, each to its own
    copy; replies in agent order.

    Every agent runs to completion; if some failed, the first failure is raised afterwards.
    """
    found = _agents(agents, "fanout(agents)")
    given = as_input(msg, "fanout(msg)")
    results = await asyncio.gather(
        *(agent(copy.deepcopy(given)) for agent in found), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
