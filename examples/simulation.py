"""Many agents, one process: the guess-two-thirds-of-the-average game in a local pool.

Every round the host's question carries the last average; each rule-based agent guesses
(2/3)^level of it; the round's average is the next question's. ``aopkit.pools`` splits the agents
into pools and ``aopkit.Rounds`` plays the rounds and reports each as a ``RoundFinished`` event.
Memories keep a window of two messages, so a long game runs in flat memory.

``python simulation.py`` plays 10,000 agents for 3 rounds; ``--agents 1000000`` is the
million-agent game (a few seconds a round); ``--ray`` runs the same program on Ray (one changed
argument: ``runtime="ray"``; Ray starts locally, or joins the cluster ``RAY_ADDRESS`` names).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import aopkit
from aopkit import Msg


class Guesser(aopkit.Agent):
    """Level-k reasoning: guess (2/3)^level of the average in the question."""

    def __init__(self, name: str, level: int, kernel: aopkit.Kernel | None = None) -> None:
        super().__init__(name, memory=aopkit.Memory(window=2), kernel=kernel)
        self.level = level

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        assert isinstance(msg, Msg)
        guess = msg.metadata["average"] * (2 / 3) ** self.level
        return Msg(self.name, f"{guess:.2f}", "assistant", metadata={"guess": guess})


def average(replies: list[Msg]) -> dict[str, float]:
    """The round's aggregates: what RoundFinished reports."""
    return {"average": sum(m.metadata["guess"] for m in replies) / len(replies)}


async def play(count: int, rounds: int, runtime: str = "local") -> list[float]:
    """The average of each round."""
    async with aopkit.Kernel() as kernel:
        agents = [Guesser(f"g{i}", 1 + i % 4, kernel) for i in range(count)]
        pools = aopkit.pools(agents, 250_000, runtime=runtime, kernel=kernel)
        game = aopkit.Rounds(pools, run="guess-2/3")
        averages, last = [], 50.0
        for r in range(rounds):
            question = Msg("host", f"round {r}: guess 2/3", "user", metadata={"average": last})
            played = await game.play(question, aggregate=average)
            last = played.aggregates["average"]
            averages.append(last)
            print(
                f"round {played.number}: {len(played.replies):,} replies, "
                f"{len(played.failures)} failed, average {last:.3f}, {played.seconds:.2f} s"
            )
            del played  # a Round holds every reply: let it go before the next is played
        return averages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="run the pools on Ray")
    args = parser.parse_args()
    averages = asyncio.run(play(args.agents, args.rounds, "ray" if args.ray else "local"))
    assert all(later < earlier for earlier, later in itertools.pairwise(averages))


if __name__ == "__main__":
    main()
