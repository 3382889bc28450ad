"""A pool's bulk calls given up on the driver (a timeout, a cancellation): the actor stops the
work, and the pool's next round neither waits for a call that never came nor fails."""

from __future__ import annotations

import asyncio

import pytest

import aopkit
from aopkit import Msg

pytest.importorskip("ray")

from aopkit_ray import AgentPool, RemoteAgentError

from .agents import SlowOnce

A = {"node_a": 0.01}


async def test_a_bulk_call_given_up_before_the_actor_saw_it_does_not_stall_the_next(
    kernel, cluster
):
    agents = [SlowOnce(f"s{i}", 3, kernel=kernel) for i in range(3)]
    pool = AgentPool(agents, resources=A, timeout=30, max_concurrency=1)  # one call at a time
    try:
        # The actor first: an async actor may start calls queued before it was up in any order.
        await pool.location()
        first = asyncio.ensure_future(pool.reply_all(Msg("user", "u1: hi", "user")))
        await asyncio.sleep(1)  # the actor is busy with it for three seconds
        pool.timeout = 0.2
        with pytest.raises(RemoteAgentError, match="no answer within"):
            await pool.reply_all(Msg("user", "u2: queued", "user"))  # given up while queued
        pool.timeout = 30
        done = await first
        assert {r.text for r in done} == {"cancelled before: 0"}, done.failures
        replies = await asyncio.wait_for(pool.reply_all(Msg("user", "u3: next", "user")), 10)
        assert {r.text for r in replies} == {"cancelled before: 0"} and not replies.failures
        await pool.observe_all(Msg("user", "u4: noted", "user"))
        texts = [m.text for m in pool["s0"].memory]
        assert texts == ["u1: hi", "cancelled before: 0", "u3: next", texts[3], "u4: noted"]
        assert "u2: queued" not in texts  # cancelled while queued: never delivered
    finally:
        pool.kill()


async def test_cancelling_a_ray_round_stops_it_in_the_actor(kernel, cluster):
    agents = [SlowOnce(f"s{i}", 60, kernel=kernel) for i in range(3)]
    (pool,) = aopkit.pools(agents, 3, runtime="ray", resources=A, timeout=30)
    try:
        await pool.location()  # the actor is up
        running = asyncio.ensure_future(pool.reply_all(Msg("user", "u1: hi", "user")))
        await asyncio.sleep(1)  # every first reply has begun, and sleeps
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        for _ in range(50):  # the actor hears of the cancellation soon, not at once
            replies = await pool.reply_all(Msg("user", "u2: again", "user"))
            if {r.text for r in replies} == {"cancelled before: 1"}:
                break
            await asyncio.sleep(0.1)
        assert {r.text for r in replies} == {"cancelled before: 1"}, replies
        assert not replies.failures
    finally:
        pool.kill()


async def test_a_bulk_call_names_exactly_the_agents_whose_last_call_was_given_up(kernel, cluster):
    """What the driver sends with a bulk call: the next number of every agent, and which agents
    had a call given up on since (the actor must not wait for it). Only the driver is asked."""
    agents = [SlowOnce(f"s{i}", 0, kernel=kernel) for i in range(4)]
    pool = AgentPool(agents, resources=A)
    try:
        assert pool._bulk() == ([0, 0, 0, 0], [])
        pool._lost(pool["s2"], bulk=False)  # one agent's own call given up
        assert pool._bulk() == ([1, 1, 1, 1], [2])
        assert pool._bulk() == ([2, 2, 2, 2], [])  # named once
        pool._lost(pool["s1"], bulk=False)
        pool._lost(pool["s3"], bulk=False)
        assert pool["s1"]._resyncing()  # its own next call told the actor already
        assert pool["s0"]._next() == 3  # an agent's own call takes a number too
        assert pool._bulk() == ([4, 3, 3, 3], [3])
        pool._lost(None, bulk=True)  # a bulk call given up: every agent
        assert pool._bulk() == ([5, 4, 4, 4], [0, 1, 2, 3])
        assert pool._bulk() == ([6, 5, 5, 5], [])
    finally:
        pool.kill()
