"""aopkit_ray on a local two-node Ray cluster (started and stopped here):

1. remote reply overhead: ``await remote_agent(msg)`` beside a bare Ray actor method call that
   carries the same serialised message there and back (target <= 1.5x);
2. a guess-two-thirds-of-the-average game of 10,000 rule-based agents: seconds per round in
   four pools across two nodes, beside the same agents in one process.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

from _util import report

# Ray reads these once per process: set them before importing it. The second keeps the nodes
# on loopback (docs/distributed.md, "A cluster on one machine").
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)})
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray
from ray.cluster_utils import Cluster

import aopkit
from aopkit import Msg

ROOT = Path(__file__).resolve().parents[1]
CALLS, AGENTS, ROUNDS, POOLS = 300, 10_000, 5, 4


class Echo(aopkit.Agent):
    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        return Msg(self.name, "ok", "assistant")


class Guesser(aopkit.Agent):
    """Level-k reasoning: guess (2/3)^k of the last average, with a little noise."""

    def __init__(self, name: str, level: int, kernel: aopkit.Kernel | None = None) -> None:
        super().__init__(name, kernel=kernel)
        self.level = level
        self.rng = random.Random(name)

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        last = self.memory[-1].metadata.get("average", 50.0)
        guess = max(0.0, min(100.0, last * (2 / 3) ** self.level + self.rng.uniform(-2, 2)))
        return Msg(self.name, f"{guess:.2f}", "assistant", metadata={"guess": guess})


class Bare:
    async def echo(self, data: dict[str, object]) -> dict[str, object]:
        return data


def guessers(kernel: aopkit.Kernel | None = None) -> list[Guesser]:
    return [Guesser(f"g{i}", i % 4, kernel) for i in range(AGENTS)]


async def overhead() -> tuple[float, float]:
    from aopkit_ray import to_dist

    kernel = aopkit.Kernel(environ={})
    bare = ray.remote(Bare).options(num_cpus=0, resources={"node_a": 0.01}).remote()
    agent = to_dist(Echo("echo", kernel=kernel), resources={"node_a": 0.01})
    data = kernel.codec.dump(Msg("user", "hello", "user"))
    await bare.echo.remote(data)
    await agent(Msg("user", "hello", "user"))

    async def bare_run() -> float:
        start = time.perf_counter()
        for _ in range(CALLS):
            await bare.echo.remote(data)
        return (time.perf_counter() - start) / CALLS

    async def agent_run() -> float:
        start = time.perf_counter()
        for _ in range(CALLS):
            await agent(Msg("user", "hello", "user"))
        return (time.perf_counter() - start) / CALLS

    floors, values = [], []
    for _ in range(5):  # interleaved, so drift hits both alike
        floors.append(await bare_run())
        values.append(await agent_run())
    agent.pool.kill()
    ray.kill(bare)
    return min(values), min(floors)


def average(replies: list[Msg]) -> float:
    return statistics.fmean(r.metadata["guess"] for r in replies)


async def game(pools: list[aopkit.pool.Pool]) -> float:
    """Best seconds per round of the game over ``pools`` (the same program whatever runtime)."""
    rounds = aopkit.Rounds(pools)
    avg, times = 50.0, []
    for r in range(ROUNDS):
        msg = Msg("host", f"round {r}", "user", metadata={"average": avg})
        played = await rounds.play(msg, aggregate=lambda rs: {"average": average(rs)})
        avg = played.aggregates["average"]
        times.append(played.seconds)
    return min(times)


async def local_rounds() -> float:
    return await game(aopkit.pools(guessers(aopkit.Kernel(environ={})), AGENTS))


async def pooled_rounds() -> float:
    kernel = aopkit.Kernel(environ={})
    agents = guessers(kernel)
    size, half = AGENTS // POOLS, AGENTS // 2
    groups = aopkit.pools(agents[:half], size, runtime="ray", resources={"node_a": 0.01})
    groups += aopkit.pools(agents[half:], size, runtime="ray", resources={"node_b": 0.01})
    try:
        return await game(groups)
    finally:
        for pool in groups:
            pool.kill()  # type: ignore[attr-defined]


def start_cluster() -> Cluster:
    """Two nodes on loopback, stopped by their handle (never ``ray stop``: it stops every Ray
    cluster on the machine)."""
    paths = [str(ROOT / "contrib"), str(ROOT / "kernel"), *sys.path]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)  # the nodes' workers find aopkit
    node = {"num_cpus": 1, "object_store_memory": 200_000_000, "node_ip_address": "127.0.0.1"}
    head = {**node, "resources": {"node_a": 1}, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.add_node(**node, resources={"node_b": 1})
    return cluster


def main() -> None:
    cluster = start_cluster()
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        value, floor = asyncio.run(overhead())
        report(
            "remote reply",
            value * 1e3,
            "ms/call",
            floor=floor * 1e3,
            floor_name="bare Ray actor call, same message",
            target="<= 1.5x floor",
        )
        local = asyncio.run(local_rounds())
        pooled = asyncio.run(pooled_rounds())
        report(
            f"guess 2/3 game, {AGENTS} agents in {POOLS} pools on 2 nodes",
            pooled,
            "s/round",
            floor=local,
            floor_name="same agents in one local pool",
            target="<= 1.5x floor",
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
