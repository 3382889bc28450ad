"""Hub broadcast: 50 agents x 20 rounds, each reply delivered to the other 49 and stored in
their memories; microseconds per delivered message beside an asyncio.Queue hop."""

from __future__ import annotations

import asyncio
import time

from _util import best_of, report

import aopkit

AGENTS, ROUNDS = 50, 20


class Talker(aopkit.Agent):
    async def reply(self, msg):
        return aopkit.Msg(self.name, "ok", "assistant")


async def hub_run() -> tuple[float, list[float]]:
    kernel = aopkit.Kernel(environ={})
    agents = [Talker(f"a{i}", kernel=kernel) for i in range(AGENTS)]
    per_round = []
    async with aopkit.MsgHub(agents):
        start = time.perf_counter()
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for agent in agents:
                await agent()
            per_round.append((time.perf_counter() - t) / (AGENTS * (AGENTS - 1)))
        elapsed = time.perf_counter() - start
    assert all(len(a.memory) == AGENTS * ROUNDS for a in agents)
    return elapsed / (ROUNDS * AGENTS * (AGENTS - 1)), per_round


async def queue_hop(n: int) -> float:
    queue: asyncio.Queue[object] = asyncio.Queue()
    item = object()
    start = time.perf_counter()
    for _ in range(n):
        queue.put_nowait(item)
        await queue.get()
    return (time.perf_counter() - start) / n


def main() -> None:
    deliveries = ROUNDS * AGENTS * (AGENTS - 1)
    floor = best_of(5, lambda: asyncio.run(queue_hop(deliveries))) * 1e6
    runs = [asyncio.run(hub_run()) for _ in range(5)]
    value = min(r[0] for r in runs) * 1e6
    per_round = min(runs, key=lambda r: r[0])[1]
    report(
        "hub broadcast",
        value,
        "µs/delivered msg",
        floor=floor,
        floor_name="asyncio.Queue hop",
        target="<= 3x floor",
    )
    first, last = per_round[0] * 1e6, per_round[-1] * 1e6
    print(
        f"  first round {first:.2f} µs/msg, last round {last:.2f} µs/msg "
        f"(history {AGENTS} -> {AGENTS * ROUNDS} messages per memory)"
    )


if __name__ == "__main__":
    main()
