import asyncio

import pytest

from aopkit import Agent, DeliveryError, Msg, MsgHub, ReplyError, fanout, sequential
from aopkit.events import HubJoined, HubLeft, MessageSent, Observed, ReplyFailed

from .helpers import Echo, Failing, Recorder


def texts(agent):
    return [m.text for m in agent.memory]


async def test_each_reply_reaches_every_other_participant(kernel):
    alice, bob, carol = (Echo(n, kernel=kernel) for n in ("alice", "bob", "carol"))
    topic = Msg("host", "topic: tea", "system")
    async with MsgHub([alice, bob, carol], topic, name="tea") as hub:
        await alice()
        await bob()
        assert hub.participants == [alice, bob, carol]
    assert texts(carol) == ["topic: tea", "alice: ", "bob: "]
    assert texts(alice) == ["topic: tea", "alice: ", "bob: "]
    await alice()  # after the hub closes, replies are not broadcast any more
    assert len(carol.memory) == 3


async def test_concurrent_replies_are_observed_in_one_order_by_everyone(kernel):
    class Jittery(Agent):
        """Replies after a delay, and observes slowly, so deliveries could interleave."""

        def __init__(self, name, delay):
            super().__init__(name, kernel=kernel)
            self.delay = delay

        async def reply(self, msg):
            await asyncio.sleep(self.delay)
            return Msg(self.name, self.name, "assistant")

        async def observe(self, msg):
            await asyncio.sleep(0.001 * (len(self.name) % 3))
            await super().observe(msg)

    agents = [Jittery(f"agent{'x' * i}", 0.001 * (i % 4)) for i in range(8)]
    listener = Jittery("listener", 0)
    async with MsgHub([*agents, listener]):
        await asyncio.gather(*(a() for a in agents))
    order = [m.id for m in listener.memory]
    assert len(order) == 8
    for agent in agents:
        others = [m.id for m in agent.memory if m.name != agent.name]
        assert others == [i for i in order if i in others], f"{agent.name} saw another order"


async def test_add_and_remove_mid_conversation(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    alice, bob, carol = (Echo(n, kernel=kernel) for n in ("alice", "bob", "carol"))
    async with MsgHub([alice, bob], name="h") as hub:
        await alice()
        hub.add(carol)
        await bob()
        hub.remove(alice)
        await carol()
        await alice()  # no longer in the hub: nobody hears it
    assert texts(carol) == ["bob: ", "carol: "]
    assert texts(alice) == ["alice: ", "bob: ", "alice: "]
    assert texts(bob) == ["alice: ", "bob: ", "carol: "]
    joins = [(e.hub, e.agent) for e in recorder.of(HubJoined)]
    leaves = [(e.hub, e.agent) for e in recorder.of(HubLeft)]
    assert joins == [("h", "alice"), ("h", "bob"), ("h", "carol")]
    assert leaves == [("h", "alice"), ("h", "bob"), ("h", "carol")]


async def test_a_failing_participant_leaves_the_others_intact(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    broken = Failing("broken", kernel=kernel)
    async with MsgHub([alice, broken, bob]):
        await alice()
        with pytest.raises(ReplyError, match="'broken'"):
            await broken()
        await bob()
    assert texts(alice) == ["alice: ", "bob: "]
    assert texts(bob) == ["alice: ", "bob: "]
    assert [e.agent for e in recorder.of(ReplyFailed)] == ["broken"]


async def test_an_observer_that_raises_does_not_stop_delivery_to_the_others(kernel):
    class Deaf(Agent):
        async def observe(self, msg):
            raise OSError("disk full")

    alice, deaf, bob = (
        Echo("alice", kernel=kernel),
        Deaf("deaf", kernel=kernel),
        Echo("bob", kernel=kernel),
    )
    async with MsgHub([alice, deaf, bob]):
        with pytest.raises(DeliveryError, match="not observed by 'deaf' \\(OSError: disk full\\)"):
            await alice()
    assert texts(bob) == ["alice: "]
    assert texts(alice) == ["alice: "]  # the reply itself succeeded and is kept


async def test_explicit_broadcast_and_events(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    note = Msg("system", "five minutes left", "system")
    async with MsgHub([alice, bob], name="room") as hub:
        await hub.broadcast(note)
        reply = await alice()
    sent = recorder.of(MessageSent)
    assert [(e.msg.id, e.hubs) for e in sent] == [(note.id, ("room",)), (reply.id, ("room",))]
    observed = [(e.agent, e.msg_id) for e in recorder.of(Observed)]
    assert observed == [("alice", note.id), ("bob", note.id), ("bob", reply.id)]


async def test_a_reply_made_while_observing_is_delivered_after_the_current_message(kernel):
    class Responder(Echo):
        """Answers every message from alice as soon as it observes it."""

        async def observe(self, msg):
            await super().observe(msg)
            if msg.name == "alice":
                await self(msg)

    alice, responder, carol = (
        Echo("alice", kernel=kernel),
        Responder("resp", kernel=kernel),
        Echo("carol", kernel=kernel),
    )
    async with MsgHub([alice, responder, carol]):
        await asyncio.wait_for(alice(), 5)
    assert texts(carol) == ["alice: ", "resp: alice: "]
    assert texts(alice) == ["alice: ", "resp: alice: "]


async def test_sequential_pipeline(kernel):
    a, b, c = (Echo(n, kernel=kernel) for n in "abc")
    last = await sequential([a, b, c], Msg("u", "go", "user"))
    assert last.text == "c: b: a: go"


async def test_fanout_gives_each_agent_its_own_copy(kernel):
    class Mutating(Agent):
        async def reply(self, msg):
            msg.metadata["touched_by"] = self.name
            return Msg(self.name, str(msg.metadata), "assistant")

    question = Msg("u", "go", "user", metadata={})
    replies = await fanout([Mutating("a", kernel=kernel), Mutating("b", kernel=kernel)], question)
    assert [r.text for r in replies] == ["{'touched_by': 'a'}", "{'touched_by': 'b'}"]
    assert question.metadata == {}


async def test_fanout_runs_everyone_then_raises_the_first_failure(kernel):
    ok = Echo("ok", kernel=kernel)
    with pytest.raises(ReplyError, match="'broken'"):
        await fanout([Failing("broken", kernel=kernel), ok], Msg("u", "go", "user"))
    assert texts(ok) == ["go", "ok: go"]


async def test_observers_doing_io_are_delivered_to_concurrently_and_in_order(kernel):
    class Remote(Agent):
        concurrent_observe = True

        async def observe(self, msg):
            await asyncio.sleep(0.1)  # a round trip to another process
            await super().observe(msg)

    alice = Echo("alice", kernel=kernel)
    remotes = [Remote(f"r{i}", kernel=kernel) for i in range(5)]
    async with MsgHub([alice, *remotes]):
        started = asyncio.get_running_loop().time()
        await alice(Msg("u", "one", "user"))
        await alice(Msg("u", "two", "user"))
        elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 0.5, "five 0.1 s deliveries per message should overlap"
    for remote in remotes:
        assert texts(remote) == ["alice: one", "alice: two"]
