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


class SlowOnce(Agent):
    """Its first reply waits ``delay`` seconds; every reply says how many replies were
    cancelled before it (on the actor: what a cancelled round left running)."""

    def __init__(self, name: str, delay: float, kernel: aopkit.Kernel | None = None):
        super().__init__(name, kernel=kernel)
        self.delay, self.began, self.cancelled = delay, 0, 0

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        self.began += 1
        if self.began == 1:
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return Msg(self.name, f"cancelled before: {self.cancelled}", "assistant")


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


class Guesser(Agent):
    """Rule-based: (2/3)^level of the average the question carries, in a window of two."""

    def __init__(self, name: str, level: int, kernel: aopkit.Kernel | None = None):
        super().__init__(name, memory=aopkit.Memory(window=2), kernel=kernel)
        self.level = level

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        assert isinstance(msg, Msg)
        guess = msg.metadata["average"] * (2 / 3) ** self.level
        return Msg(self.name, f"{guess:.3f}", "assistant", metadata={"guess": guess})


async def guessing_game(pools: list, rounds: int = 3) -> list[tuple[list, dict[str, str], float]]:
    """The simulation program, whatever runtime made the pools: each round's replies (all but
    their ids and timestamps), failures and average."""
    game = aopkit.Rounds(pools, run="game")
    results, last = [], 50.0
    for r in range(rounds):
        question = Msg("host", f"round {r}", "user", metadata={"average": last})
        played = await game.play(
            question,
            aggregate=lambda rs: {"average": sum(m.metadata["guess"] for m in rs) / len(rs)},
        )
        last = played.aggregates["average"]
        replies = [(m.name, m.role, m.content, m.metadata) for m in played.replies]
        results.append((replies, played.failures, last))
    return results
