"""Agents and the example conversation the Ray tests run locally and distributed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs

import aopkit
from aopkit import Agent, Msg, MsgHub
from aopkit.retry import NO_RETRY
from aopkit.secret import Secret


class Counter(Agent):
    """Replies with what it has seen: a transcript that shows any lost, reordered or duplicated
    message."""

    def __init__(self, name: str, *, delay: float = 0.0, kernel: aopkit.Kernel | None = None):
        super().__init__(name, kernel=kernel)
        self.delay = delay

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        if self.delay:
            await asyncio.sleep(self.delay)
        seen = ",".join(m.text.split(":")[0] for m in self.memory)
        return Msg(self.name, f"{self.name}#{len(self.memory)}: saw {seen}", "assistant")


class Failing(Agent):
    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        raise ValueError("no answer today")


async def conversation(agents: list[Agent], rounds: int = 2) -> list[str]:
    """The example: a hub, an announcement, each agent speaks in turn; the transcript."""
    transcript = []
    async with MsgHub(agents, Msg("host", "host: welcome", "user")):
        for _ in range(rounds):
            for agent in agents:
                transcript.append((await agent()).text)
    return transcript


async def slow_observe(agent: Agent, msg: aopkit.agent.Incoming) -> None:
    """A pre_observe hook that takes half a second over slow news: a model summarising it."""
    if isinstance(msg, Msg) and "slow" in msg.text:
        await asyncio.sleep(0.5)


def refuse(agent: Agent, msg: aopkit.agent.Incoming) -> None:
    raise RuntimeError(f"{agent.name} refuses to listen")


@attrs.frozen
class Verdict:
    ok: bool


class Judge(Agent):
    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        return Msg(self.name, '{"ok": true}', "assistant")


def keyed(base_url: str, **key: str) -> Callable[[aopkit.Kernel], Agent]:
    """A factory of an agent whose model's key is named (``api_key_env=`` / ``api_key_file=``)
    and read where the agent is built: on the node."""

    def build(kernel: aopkit.Kernel) -> Agent:
        model = kernel.model("openai:gpt-test", base_url=base_url, retry=NO_RETRY, **key)
        return aopkit.ModelAgent("keyed", model, kernel=kernel)

    return build


class Holder(Counter):
    """An agent that keeps a secret given by value (which must not travel)."""

    def __init__(self, name: str, token: Secret, *, kernel: aopkit.Kernel | None = None):
        super().__init__(name, kernel=kernel)
        self.token = token
