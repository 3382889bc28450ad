"""The cost of the event stream on an agent's reply: no listener vs one listener that keeps
every event, beside the same reply with events compiled out (an agent whose kernel is never
observed is the floor)."""

from __future__ import annotations

import asyncio
import time

from _util import best_of, report

import aopkit

N = 20_000


class Echo(aopkit.Agent):
    async def reply(self, msg):
        return aopkit.Msg(self.name, "ok", "assistant")


class Keep:
    def __init__(self) -> None:
        self.events: list[object] = []

    @aopkit.hookimpl
    def event(self, event: object) -> None:
        self.events.append(event)


async def replies(kernel: aopkit.Kernel) -> float:
    agent = Echo("e", kernel=kernel)
    msg = aopkit.Msg("u", "hi", "user")
    start = time.perf_counter()
    for _ in range(N):
        await agent(msg)
        agent.memory.clear()
    return (time.perf_counter() - start) / N


def main() -> None:
    quiet = aopkit.Kernel(environ={})
    loud = aopkit.Kernel(environ={})
    loud.register(Keep(), "keep")
    emit_guard = best_of(5, lambda: _guard(quiet)) * 1e9
    report("event guard with no listener", emit_guard, "ns/event")
    none = best_of(5, lambda: asyncio.run(replies(quiet))) * 1e6
    one = best_of(5, lambda: asyncio.run(replies(loud))) * 1e6
    report("agent reply, no listener", none, "µs")
    report(
        "agent reply, one listener (4 events/reply)",
        one,
        "µs",
        floor=none,
        floor_name="no listener",
    )


def _guard(kernel: aopkit.Kernel) -> float:
    start = time.perf_counter()
    for _ in range(1_000_000):
        if kernel.observed:
            raise AssertionError
    return (time.perf_counter() - start) / 1_000_000


if __name__ == "__main__":
    main()
