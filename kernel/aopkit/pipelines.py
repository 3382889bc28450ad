"""Pipelines: common ways to chain agents."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .message import Msg

if TYPE_CHECKING:
    from .agent import Agent


async def sequential(agents: Iterable[Agent], msg: Msg | None = None) -> Msg | None:
    """Each agent replies to the previous one's reply; returns the last reply."""
    for agent in agents:
        msg = await agent(msg)
    return msg


async def fanout(agents: Iterable[Agent], msg: Msg | None = None) -> list[Msg]:
    """All agents reply to ``msg`` concurrently, each to its own copy; replies in agent order.

    Every agent runs to completion; if some failed, the first failure is raised afterwards.
    """
    results = await asyncio.gather(
        *(agent(copy.deepcopy(msg)) for agent in agents), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
