"""A distributed simulation on Ray: the guess-two-thirds-of-the-average game.

Each round a host announces the last average; every agent guesses two thirds of it to the
power of its reasoning level, and the closest guess wins. The same rule-based agents run in one
process or, with ``--ray``, in pools of many agents per Ray actor (10,000 agents do not need
10,000 processes). ``python distributed_simulation.py --ray --agents 2000``: Ray starts locally,
or joins the cluster named by ``RAY_ADDRESS``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics

import aopkit
from aopkit import Msg


class Guesser(aopkit.Agent):
    """Level-k reasoning: guess (2/3)^level of the last average, with a little noise."""

    def __init__(self, name: str, level: int, kernel: aopkit.Kernel | None = None) -> None:
        super().__init__(name, kernel=kernel)
        self.level = level
        self.rng = random.Random(name)  # seeded by name: the same game wherever it runs

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        last = self.memory[-1].metadata.get("average", 50.0)
        guess = max(0.0, min(100.0, last * (2 / 3) ** self.level + self.rng.uniform(-2, 2)))
        return Msg(self.name, f"{guess:.2f}", "assistant", metadata={"guess": guess})


def agents(count: int, kernel: aopkit.Kernel) -> list[Guesser]:
    return [Guesser(f"g{i}", 1 + i % 4, kernel) for i in range(count)]


async def play(
    count: int, rounds: int, *, distributed: bool, pool_size: int = 500, **placement: object
) -> list[tuple[float, str]]:
    """The averages and winners of each round."""
    async with aopkit.Kernel() as kernel:  # closing it releases its HTTP session
        players = agents(count, kernel)
        if distributed:
            from aopkit_ray import pools

            groups = pools(players, pool_size, kernel=kernel, **placement)
        average, results = 50.0, []
        for r in range(rounds):
            announcement = Msg(
                "host",
                f"round {r}: the average was {average:.2f}",
                "user",
                metadata={"average": average},
            )
            if distributed:
                answers = await asyncio.gather(*(g.reply_all(announcement) for g in groups))
                replies = [m for answer in answers for m in answer]
            else:
                replies = list(await asyncio.gather(*(p(announcement) for p in players)))
            average = statistics.fmean(m.metadata["guess"] for m in replies)
            target = average * 2 / 3
            winner = min(replies, key=lambda m: abs(m.metadata["guess"] - target)).name
            results.append((round(average, 6), winner))
        if distributed:
            for group in groups:
                group.kill()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ray", action="store_true", help="run the agents in Ray actor pools")
    args = parser.parse_args()
    if args.ray:
        if "RAY_ADDRESS" not in os.environ:  # a cluster of its own: on loopback only
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when Ray is imported
        import ray

        local = {} if "RAY_ADDRESS" in os.environ else {"_node_ip_address": "127.0.0.1"}
        ray.init(logging_level="WARNING", include_dashboard=False, **local)
    for number, (avg, winner) in enumerate(
        asyncio.run(play(args.agents, args.rounds, distributed=args.ray))
    ):
        print(f"round {number}: average {avg:.2f}, winner {winner}")
