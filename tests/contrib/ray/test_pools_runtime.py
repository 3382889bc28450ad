"""The simulation program on the runtime "ray": one changed argument, the same rounds as in
one process, failures counted per agent, the rounds reported to a listener."""

from __future__ import annotations

import pytest

import aopkit

pytest.importorskip("ray")

from aopkit_ray import AgentPool

from .agents import Failing, Guesser, guessing_game

A = {"node_a": 0.01}
B = {"node_b": 0.01}


class Rounds:
    def __init__(self) -> None:
        self.seen: list[aopkit.events.RoundFinished] = []

    @aopkit.hookimpl
    def event(self, event: aopkit.events.Event) -> None:
        if isinstance(event, aopkit.events.RoundFinished):
            self.seen.append(event)


def players(kernel: aopkit.Kernel) -> list[aopkit.Agent]:
    agents: list[aopkit.Agent] = [Guesser(f"g{i}", i % 4, kernel) for i in range(60)]
    agents[7] = Failing("broken", kernel=kernel)
    return agents


async def test_the_same_game_locally_and_on_ray(kernel, cluster):
    local = await guessing_game(aopkit.pools(players(kernel), 25))
    listener = Rounds()
    kernel.register(listener, "rounds")
    agents = players(kernel)
    pools = aopkit.pools(agents[:30], 15, runtime="ray", resources=A)
    pools += aopkit.pools(agents[30:], 15, runtime="ray", resources=B)
    assert all(isinstance(p, AgentPool) for p in pools) and len(pools) == 4
    try:
        remote = await guessing_game(pools)
        assert remote == local  # the same replies, failures and averages, round after round
        assert len(remote[0][0]) == 59 and remote[0][1] == {"broken": "ValueError: no answer today"}
        assert [(e.round, e.agents, e.replied, e.failed) for e in listener.seen] == [
            (1, 60, 59, 1),
            (2, 60, 59, 1),
            (3, 60, 59, 1),
        ]
        assert listener.seen[-1].aggregates == {"average": pytest.approx(remote[-1][2])}
        played = await pools[0].reply_all(
            aopkit.Msg("host", "q", "user", metadata={"average": 3.0})
        )
        assert played.failures == {"broken": "ValueError: no answer today"}
        kept = pools[0]["g1"].memory  # the window holds on the actor too
        assert len(kept) == 2 and kept[-1] == played[1]  # the very reply, id and time included
    finally:
        for pool in pools:
            pool.kill()


async def test_to_dist_goes_through_the_registry(kernel, cluster):
    remote = Guesser("solo", 1, kernel).to_dist(resources=A)
    try:
        reply = await remote(aopkit.Msg("host", "q", "user", metadata={"average": 30.0}))
        assert reply.metadata["guess"] == pytest.approx(20.0)
    finally:
        remote.pool.kill()
