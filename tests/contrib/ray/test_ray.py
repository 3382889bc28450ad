"""aopkit_ray on a real local Ray cluster of two nodes (see conftest)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import aopkit
from aopkit import DeliveryError, Msg, MsgHub

pytest.importorskip("ray")

from aopkit_ray import AgentPool, RemoteAgent, RemoteAgentError, to_dist

from .agents import Counter, Failing, Judge, Verdict, conversation, refuse, slow_observe

A = {"node_a": 0.01}
B = {"node_b": 0.01}


class Recorder:
    def __init__(self) -> None:
        self.events: list[aopkit.events.Event] = []

    @aopkit.hookimpl
    def event(self, event: aopkit.events.Event) -> None:
        self.events.append(event)


@pytest.mark.parametrize("where", [("node_a", "node_a"), ("node_a", "node_b")])
async def test_same_conversation_locally_and_distributed(kernel, cluster, where):
    local = await conversation([Counter(n, kernel=kernel) for n in ("alice", "bob", "carol")])
    alice = to_dist(Counter("alice", kernel=kernel), resources={where[0]: 0.01})
    bob = to_dist(lambda k: Counter("bob", kernel=k), resources={where[1]: 0.01}, kernel=kernel)
    carol = Counter("carol", kernel=kernel)  # a hub mixes local and remote agents
    assert isinstance(alice, aopkit.Agent) and bob.name == "bob"
    assert await conversation([alice, bob, carol]) == local
    assert (await alice.pool.location())[1] == cluster[where[0]]
    assert (await bob.pool.location())[1] == cluster[where[1]]
    assert [m.text for m in bob.memory] == [m.text for m in carol.memory]


async def test_remote_events_reach_the_driver_stream(kernel, cluster):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    alice = to_dist(Counter("alice", kernel=kernel), resources=B)
    async with MsgHub([alice, Counter("bob", kernel=kernel)], name="room") as hub:
        await hub.broadcast(Msg("host", "host: hi", "user"))
        reply = await alice()
    kinds = [(type(e).__name__, getattr(e, "agent", None)) for e in recorder.events]
    assert ("Observed", "alice") in kinds and ("ReplyFinished", "alice") in kinds
    sent = [
        e for e in recorder.events if type(e).__name__ == "MessageSent" and e.msg.id == reply.id
    ]
    assert len(sent) == 1 and sent[0].hubs == ("room",)


@pytest.fixture(params=["json", "postgresql"])
async def restart_store(request, tmp_path):
    """Where a restarted actor finds its agents' state: a directory, or a database every node
    reaches (no shared directory)."""
    if request.param == "json":
        yield aopkit.JSONFileStore(tmp_path)
        return
    from aopkit_postgres import PostgresStore

    async with PostgresStore(request.getfixturevalue("pg_dsn")) as store:
        yield store


async def test_an_actor_killed_mid_reply_restarts_with_its_saved_state(
    kernel, cluster, restart_store
):
    agent = to_dist(
        Counter("slow", delay=1.0, kernel=kernel),
        resources=B,
        store=restart_store,
        max_restarts=2,
        max_task_retries=2,
        timeout=60,
    )
    first = await agent(Msg("user", "u1: hello", "user"))
    pid, _ = await agent.pool.location()
    call = asyncio.ensure_future(agent(Msg("user", "u2: again", "user")))
    await asyncio.sleep(0.5)  # the reply is running
    os.kill(pid, signal.SIGKILL)
    second = await call  # Ray restarted the actor and retried the call
    new_pid, _ = await agent.pool.location()
    assert new_pid != pid
    texts = [m.text for m in agent.memory]
    assert texts == ["u1: hello", first.text, "u2: again", second.text]  # nothing lost or twice
    assert second.text == "slow#3: saw u1,slow#1,u2"
    saved = (await restart_store.load(agent.pool.name))["slow"]  # what the new actor saved
    assert [m["content"] for m in saved["agent"]["memory"]][-1] == second.text
    agent.pool.kill()


async def test_a_restarted_actor_without_a_store_starts_its_agent_afresh(kernel, cluster):
    agent = to_dist(
        Counter("fresh", kernel=kernel), resources=A, max_restarts=1, max_task_retries=1
    )
    await agent(Msg("user", "u1: hello", "user"))
    pid, _ = await agent.pool.location()
    os.kill(pid, signal.SIGKILL)
    reply = await agent(Msg("user", "u2: again", "user"))  # call 2: the actor's first
    assert reply.text == "fresh#1: saw u2"
    assert (await agent.pool.location())[0] != pid
    agent.pool.kill()


async def test_a_later_pool_on_a_saved_session_takes_up_its_agents(kernel, cluster, tmp_path):
    """Another program's pool on the same store and session: the agent remembers, and the new
    pool's calls (numbered from 0 again) are all applied."""
    store = aopkit.JSONFileStore(tmp_path)
    first = to_dist(Counter("keeper", kernel=kernel), resources=A, store=store, session="kept")
    await first(Msg("user", "u1: hello", "user"))
    first.pool.kill()
    later = to_dist(Counter("keeper", kernel=kernel), resources=B, store=store, session="kept")
    await later.observe(Msg("user", "u2: news", "user"))
    reply = await later(Msg("user", "u3: and?", "user"))
    assert reply.text == "keeper#4: saw u1,keeper#1,u2,u3"
    later.pool.kill()


async def test_a_dead_actor_gives_a_clear_error_not_a_hang(kernel, cluster):
    agent = to_dist(Counter("once", kernel=kernel), resources=A, timeout=20)
    await agent(Msg("user", "u1: hi", "user"))
    agent.pool.kill()
    for _ in range(100):  # ray.kill only asks: a call sent at once may still be served
        try:
            await agent.pool.location()
        except RemoteAgentError:
            break
        await asyncio.sleep(0.1)
    with pytest.raises(RemoteAgentError, match=r"'once'.*unavailable"):
        await agent(Msg("user", "u2: hi", "user"))


async def test_a_call_that_takes_too_long_times_out(kernel, cluster):
    agent = to_dist(Counter("sleepy", delay=30, kernel=kernel), resources=A, timeout=0.5)
    with pytest.raises(RemoteAgentError, match=r"no answer within 0\.5s"):
        await agent(Msg("user", "u: hi", "user"))
    agent.pool.kill()


async def test_a_failing_reply_raises_reply_error(kernel, cluster):
    agent = to_dist(Failing("grumpy", kernel=kernel), resources=A)
    with pytest.raises(aopkit.ReplyError, match=r"grumpy.*ValueError: no answer today"):
        await agent(Msg("user", "u: hi", "user"))


async def test_state_round_trips_and_sessions_are_taken_before(kernel, cluster):
    agent = to_dist(Counter("keeper", kernel=kernel), resources=A)
    await agent(Msg("user", "u: one", "user"))
    state = agent.state_dict()
    await agent(Msg("user", "u: two", "user"))
    agent.load_state_dict(state)
    assert len(agent.memory) == 2
    with pytest.raises(aopkit.AopkitError, match="before going remote"):
        agent.session("s1")


def test_an_unpicklable_agent_asks_for_a_factory(kernel, cluster):
    agent = Counter("lock", kernel=kernel)
    agent.lock = __import__("threading").Lock()  # type: ignore[attr-defined]
    with pytest.raises(aopkit.AopkitError, match="pass a factory instead"):
        to_dist(agent)


async def test_pools_across_nodes_reply_and_observe_in_one_call_each(kernel, cluster):
    pools = [
        AgentPool([Counter(f"{node}{i}", kernel=kernel) for i in range(50)], resources=res)
        for node, res in (("a", A), ("b", B))
    ]
    assert len({await p.location() for p in pools}) == 2
    for pool in pools:
        await pool.observe_all(Msg("host", "host: go", "user"))
    replies = [r for pool in pools for r in await pool.reply_all()]
    assert [r.text for r in replies[:2]] == ["a0#1: saw host", "a1#1: saw host"]
    assert len(replies) == 100
    member = pools[1]["b7"]
    assert isinstance(member, RemoteAgent) and len(member.memory) == 2


class Narrator(Counter):
    """Replies in another's name: a reply's name is its own, not always its agent's."""

    async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
        said = await super().reply(msg)
        return Msg("narrator", said.text, "assistant")


async def test_a_bulk_reply_keeps_each_reply_its_own_name_around_failures(kernel, cluster):
    """Names equal to the agents' stay behind in a bulk call (the driver has them): after an
    agent that failed, and beside one that replies in another name, each reply still comes
    back with its own."""
    from .agents import Failing

    agents = [Counter("c0", kernel=kernel), Failing("bad", kernel=kernel)]
    agents += [Narrator("n", kernel=kernel), Counter("c1", kernel=kernel)]
    pool = AgentPool(agents, resources=A)
    try:
        for _ in range(2):
            replies = await pool.reply_all(Msg("host", "host: go", "user"))
            assert [r.name for r in replies] == ["c0", "narrator", "c1"]
            assert [r.text.split("#")[0] for r in replies] == ["c0", "n", "c1"]  # whose reply
            assert list(replies.failures) == ["bad"]
            await pool.observe_all(Msg("host", "host: noted", "user"))
    finally:
        pool.kill()


async def test_a_broadcast_reaches_many_remote_agents_concurrently(kernel, cluster):
    members = []
    for i in range(4):
        agent = Counter(f"slow{i}", kernel=kernel)
        agent.add_hook("pre_observe", slow_observe)
        members.append(agent)
    pool = AgentPool(members, resources=B)
    await pool.location()  # the actor is up
    async with MsgHub(pool.agents) as hub:
        start = time.perf_counter()
        await hub.broadcast(Msg("host", "host: slow news", "user"))
        elapsed = time.perf_counter() - start
    assert elapsed < 1.5  # four observes of 0.5 s each, side by side
    assert [len(a.memory) for a in pool.agents] == [1, 1, 1, 1]


async def test_a_failed_remote_observe_is_a_delivery_error(kernel, cluster):
    deaf = Counter("deaf", kernel=kernel)
    deaf.add_hook("pre_observe", refuse)
    agent = to_dist(deaf, resources=A)
    async with MsgHub([agent, Counter("other", kernel=kernel)]) as hub:
        with pytest.raises(DeliveryError, match="deaf refuses to listen"):
            await hub.broadcast(Msg("host", "host: hi", "user"))


async def test_structured_replies_come_back_as_values(kernel, cluster):
    agent = to_dist(Judge("judge", kernel=kernel), resources=A)
    assert await agent(Msg("user", "u: fine?", "user"), structured=Verdict) == Verdict(True)


async def test_interrupt_reaches_the_remote_reply(kernel, cluster):
    agent = to_dist(Counter("chatty", delay=30, kernel=kernel), resources=A)
    await agent.pool.location()
    call = asyncio.ensure_future(agent(Msg("user", "u: talk", "user")))
    await asyncio.sleep(0.5)
    agent.interrupt()
    reply = await asyncio.wait_for(call, 10)
    assert reply.metadata == {"interrupted": True}


async def test_messages_are_taken_in_the_order_sent_even_when_one_is_slow(kernel, cluster):
    listener = Counter("listener", kernel=kernel)
    listener.add_hook("pre_observe", slow_observe)
    agent = to_dist(listener, resources=A)
    async with MsgHub([agent]) as hub:
        await hub.broadcast(Msg("host", "first: slow news", "user"))
        await hub.broadcast(Msg("host", "second: quick news", "user"))
        reply = await agent()
    assert reply.text == "listener#2: saw first,second"
