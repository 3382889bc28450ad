"""aopkit_ray on a local two-node Ray cluster (started and stopped here):

1. remote reply overhead: ``await remote_agent(msg)`` beside a bare Ray actor method call that
   carries the same serialised message there and back (target <= 1.5x);
2. the simulation's guess-two-thirds-of-the-average game (``bench_simulation.py``'s agents) of
   100,000 rule-based agents: seconds per round in four pools across two nodes, beside the same
   agents in one local pool (target <= 1.5x). ``AOPKIT_RAY_AGENTS``, ``AOPKIT_RAY_POOLS`` scale it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
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
CALLS, ROUNDS, LEVELS = 300, 8, 4
AGENTS = int(os.environ.get("AOPKIT_RAY_AGENTS", 100_000))
POOLS = int(os.environ.get("AOPKIT_RAY_POOLS", 4))  # split evenly over the two nodes


class Echo(aopkit.Agent):
    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        return Msg(self.name, "ok", "assistant")


class Guesser(aopkit.Agent):
    """Guess (2/3)^level of the average the question carries (as in bench_simulation.py)."""

    def __init__(self, name: str, level: int, kernel: aopkit.Kernel) -> None:
        super().__init__(name, kernel=kernel, memory=aopkit.Memory(window=2))
        self.level = level

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        assert isinstance(msg, Msg)
        guess = msg.metadata["average"] * (2 / 3) ** self.level
        return Msg(self.name, "", "assistant", metadata={"guess": guess})


class Bare:
    async def echo(self, data: dict[str, object]) -> dict[str, object]:
        return data


def guessers(kernel: aopkit.Kernel) -> list[Guesser]:
    return [Guesser(f"g{i}", i % LEVELS, kernel) for i in range(AGENTS)]


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


def average(replies: list[Msg]) -> dict[str, float]:
    return {"average": sum(m.metadata["guess"] for m in replies) / len(replies)}


async def game() -> tuple[float, float]:
    """(best seconds per round on Ray, best in one local pool): the same program over pools of
    either runtime, a Ray round after each local one, so drift on a shared machine hits both."""
    local = aopkit.Rounds(aopkit.pools(guessers(aopkit.Kernel(environ={})), AGENTS))
    agents = guessers(aopkit.Kernel(environ={}))
    size, half = AGENTS // POOLS, AGENTS // 2
    groups = aopkit.pools(agents[:half], size, runtime="ray", resources={"node_a": 0.01})
    groups += aopkit.pools(agents[half:], size, runtime="ray", resources={"node_b": 0.01})
    remote = aopkit.Rounds(groups)
    del agents
    gc.collect()
    gc.freeze()  # the agents and proxies live for the whole game, as in bench_simulation
    avg, times, floors = 50.0, [], []
    try:
        for r in range(ROUNDS):
            msg = Msg("host", f"round {r}", "user", metadata={"average": avg})
            floor = await local.play(msg, aggregate=average)
            played = await remote.play(msg, aggregate=average)
            assert played.aggregates == floor.aggregates  # the very same game
            assert not played.failures and len(played.replies) == AGENTS
            avg = played.aggregates["average"]
            times.append(played.seconds)
            floors.append(floor.seconds)
            del floor, played  # each round let go before the next, as docs/simulation.md advises
    finally:
        gc.unfreeze()
        for pool in groups:
            pool.kill()  # type: ignore[attr-defined]
    return min(times), min(floors)


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
        pooled, local = asyncio.run(game())
        report(
            f"guess 2/3 game, {AGENTS:,} agents in {POOLS} pools on 2 nodes",
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
