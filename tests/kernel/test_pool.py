"""The local pool: the same replies, memories and events as awaiting each agent, errors counted
per agent, rounds reported to observers, cancellation that leaves nothing running."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
from typing import ClassVar

import pytest

import aopkit
from aopkit import Agent, Memory, Msg
from aopkit.errors import AopkitError, ConfigurationError, MessageTypeError
from aopkit.events import (
    MessageSent,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    RoundFinished,
)

SPEAKER: contextvars.ContextVar[str | None] = contextvars.ContextVar("speaker", default=None)


class Guesser(Agent):
    """Rule-based: 2/3 of the average the question carries; never waits."""

    async def reply(self, msg):
        return Msg(self.name, "", "assistant", metadata={"guess": msg.metadata["average"] * 2 / 3})


class Waiter(Agent):
    """Waits (a real suspension) before it answers."""

    def __init__(self, name, gate=None, **kwargs):
        super().__init__(name, **kwargs)
        self.gate, self.cancelled = gate, False

    async def reply(self, msg):
        try:
            if self.gate is None:
                await asyncio.sleep(0)
            else:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return f"{self.name} waited"


class Heir(Guesser):
    """Inherits its reply."""


class Deferred(Agent):
    """reply() is a plain function that returns an awaitable."""

    def reply(self, msg):
        return asyncio.sleep(0, result=f"{self.name} deferred")


class Failing(Agent):
    async def reply(self, msg):
        raise ValueError(f"{self.name} cannot count")


class Odd(Agent):
    async def reply(self, msg):
        return 42  # neither a Msg nor a str


class Speaker(Agent):
    """Sets a context variable in its reply: the next agent must not see it."""

    async def reply(self, msg):
        seen = SPEAKER.get()
        SPEAKER.set(self.name)
        return Msg(self.name, str(seen), "assistant")


class Recorder:
    def __init__(self) -> None:
        self.events: list[aopkit.events.Event] = []

    @aopkit.hookimpl
    def event(self, event):
        self.events.append(event)


def question(average=30.0):
    return Msg("host", "guess 2/3 of the average", "user", metadata={"average": average})


async def test_a_pool_replies_as_each_agent_would(kernel):
    agents = [*(Guesser(f"g{i}", kernel=kernel) for i in range(4)), Heir("h", kernel=kernel)]
    waiters = [Waiter(f"w{i}", kernel=kernel) for i in range(3)]
    (pool,) = aopkit.pools([*agents, *waiters, Deferred("d", kernel=kernel)], 100)
    assert isinstance(pool, aopkit.AgentPool) and len(pool) == 9 and pool["w1"] is waiters[1]
    msg = question()
    replies = await pool.reply_all(msg)
    assert [r.name for r in replies] == [a.name for a in pool.agents]  # agent order
    assert replies.failures == {}
    assert [r.metadata["guess"] for r in replies[:5]] == [20.0] * 5
    assert [r.text for r in replies[5:]] == ["w0 waited", "w1 waited", "w2 waited", "d deferred"]
    for agent, reply in zip(pool.agents, replies, strict=True):
        assert agent.memory[0] is msg and agent.memory[1] is reply  # one shared question
    alone = Guesser("alone", kernel=kernel)
    assert (await alone(msg)).metadata == replies[0].metadata


class Counted(Guesser):
    """Its own ``__call__``: a pool must call it, as ``await agent(msg)`` would."""

    calls = 0

    async def __call__(self, msg=None, **kwargs):
        type(self).calls += 1
        return await super().__call__(msg, **kwargs)


async def test_agents_of_mixed_kinds_each_take_their_own_path(kernel, monkeypatch):
    monkeypatch.setattr(Counted, "calls", 0)
    hooked, texts = Guesser("hooked", kernel=kernel), []
    hooked.add_hook("post_reply", lambda agent, msg, reply: texts.append(reply.name))
    kinds = [Guesser, Counted, Heir, Counted, Guesser]
    agents = [*(kind(f"a{i}", kernel=kernel) for i, kind in enumerate(kinds)), hooked]
    host = Guesser("host", kernel=kernel)
    async with aopkit.MsgHub([host, agents[4]], name="room"):
        replies = await aopkit.AgentPool(agents).reply_all(question())
    assert [r.name for r in replies] == [a.name for a in agents] and not replies.failures
    assert {r.metadata["guess"] for r in replies} == {20.0}
    assert Counted.calls == 2 and texts == ["hooked"]  # own __call__ and hooks both ran
    assert [m.name for m in host.memory] == ["a4"]  # a hub's member broadcasts its reply
    assert all(len(a.memory) == 2 for a in agents)


async def test_observe_all_and_text_and_bad_input(kernel):
    (pool,) = aopkit.pools([Guesser(f"g{i}", kernel=kernel) for i in range(3)], 10)
    await pool.observe_all("news")
    assert [a.memory[0].text for a in pool.agents] == ["news"] * 3
    with pytest.raises(MessageTypeError, match="reply_all"):
        await pool.reply_all(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="two agents of one pool are named 'x'"):
        aopkit.AgentPool([Guesser("x"), Guesser("x")])
    with pytest.raises(ConfigurationError, match=r"aopkit\.Agent"):
        aopkit.AgentPool(["not an agent"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="at least one agent"):
        aopkit.pools(pool.agents, 0)


def test_pools_split_in_order(kernel):
    agents = [Guesser(f"g{i}", kernel=kernel) for i in range(7)]
    split = aopkit.pools(agents, 3)
    assert [[a.name for a in p.agents] for p in split] == [
        ["g0", "g1", "g2"],
        ["g3", "g4", "g5"],
        ["g6"],
    ]
    assert all(p.kernel is kernel for p in split)


async def test_a_failing_agent_is_counted_and_the_others_reply(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    agents = [
        Guesser("g0", kernel=kernel),
        Failing("bad", kernel=kernel),
        Odd("odd", kernel=kernel),
        Waiter("w", kernel=kernel),
        Guesser("g1", kernel=kernel),
    ]
    rounds = aopkit.Rounds(aopkit.pools(agents, 2), run="game")
    played = await rounds.play(question())
    assert [r.name for r in played.replies] == ["g0", "w", "g1"]
    assert played.failures == {
        "bad": "ValueError: bad cannot count",
        "odd": "ReplyError: agent 'odd' failed to reply: TypeError: reply() must return a Msg "
        "or a str, got 42",
    }
    failed = [e.agent for e in recorder.events if isinstance(e, ReplyFailed)]
    assert sorted(failed) == ["bad", "odd"]
    (finished,) = [e for e in recorder.events if isinstance(e, RoundFinished)]
    assert (finished.agents, finished.replied, finished.failed) == (5, 3, 2)


async def test_a_failing_hook_is_that_agents_failure(kernel):
    def refuse(agent, msg):
        raise RuntimeError("hook says no")

    hooked = Guesser("hooked", kernel=kernel)
    hooked.add_hook("pre_reply", refuse)
    replies = await aopkit.AgentPool([hooked, Guesser("g", kernel=kernel)]).reply_all(question())
    assert [r.name for r in replies] == ["g"]
    assert replies.failures == {"hooked": "RuntimeError: hook says no"}


class BudgetSpender(Agent):
    async def reply(self, msg):
        raise aopkit.BudgetExceeded("agent 's'", "calls", 1, 1, 1, "scripted:x")


async def test_a_budget_stops_the_round(kernel):
    pool = aopkit.AgentPool([Guesser("g", kernel=kernel), BudgetSpender("s", kernel=kernel)])
    with pytest.raises(aopkit.BudgetExceeded):
        await pool.reply_all(question())


async def test_a_budget_in_one_pool_stops_the_whole_round(kernel):
    gate = asyncio.Event()
    waiters = [Waiter(f"w{i}", gate, kernel=kernel) for i in range(5)]
    spender = aopkit.AgentPool([BudgetSpender("s", kernel=kernel)])
    rounds = aopkit.Rounds([aopkit.AgentPool(waiters), spender])
    before = asyncio.all_tasks()
    with pytest.raises(aopkit.BudgetExceeded):
        await rounds.play(question())
    assert asyncio.all_tasks() == before  # no reply of the round runs on after it
    begun = [w for w in waiters if w.memory]
    assert begun and all(w.cancelled for w in begun) and not any(w._replies for w in waiters)
    gate.set()
    await asyncio.sleep(0.01)
    assert all(len(w.memory) < 2 for w in waiters)  # none answered afterwards


async def test_events_reach_a_listener_and_cost_nothing_without_one(kernel):
    agents = [Guesser("g0", kernel=kernel), Waiter("w0", kernel=kernel)]
    rounds = aopkit.Rounds(aopkit.pools(agents, 10), run="game")
    await rounds.play(question())  # nobody listens: nothing is made for events
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    played = await rounds.play(question(), aggregate=lambda rs: {"replies": float(len(rs))})
    kinds = [(type(e).__name__, getattr(e, "agent", None)) for e in recorder.events]
    for name in ("g0", "w0"):
        assert ("ReplyStarted", name) in kinds and ("ReplyFinished", name) in kinds
    sent = [e.msg for e in recorder.events if isinstance(e, MessageSent)]
    assert sent == played.replies
    finished = recorder.events[-1]
    assert isinstance(finished, RoundFinished)
    assert (finished.run, finished.round, finished.replied) == ("game", 2, 2)
    assert finished.aggregates == {"replies": 2.0} == played.aggregates
    assert kinds.index(("ReplyStarted", "g0")) < kinds.index(("ReplyFinished", "g0"))
    assert all(
        isinstance(e, ReplyStarted | ReplyFinished | MessageSent | RoundFinished)
        for e in recorder.events
    )


async def test_cancelling_a_round_cancels_every_waiting_reply(kernel):
    gate = asyncio.Event()
    waiters = [Waiter(f"w{i}", gate, kernel=kernel) for i in range(20)]
    pool = aopkit.AgentPool([Guesser("g", kernel=kernel), *waiters])
    before = len(asyncio.all_tasks())
    running = asyncio.ensure_future(pool.reply_all(question()))
    while not all(w.memory for w in waiters):  # every reply has begun, and waits
        await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.sleep(0)
    assert all(w.cancelled for w in waiters)
    assert len(asyncio.all_tasks()) == before
    assert all(not w._replies for w in waiters)
    gate.set()  # a later round is unaffected
    replies = await pool.reply_all(question())
    assert len(replies) == 21


async def cancelled(running):
    """Cancel a running round, see it raise, and let what it cancelled finish."""
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_round_cancelled_midway_begins_no_more_replies(kernel):
    gate = asyncio.Event()
    waiters = [Waiter(f"w{i}", gate, kernel=kernel) for i in range(20)]
    before = len(asyncio.all_tasks())
    running = asyncio.ensure_future(aopkit.AgentPool(waiters).reply_all(question()))
    while not waiters[5].memory:
        await asyncio.sleep(0)
    await cancelled(running)
    begun = [w for w in waiters if w.memory]
    assert 6 <= len(begun) < 20 and all(w.cancelled for w in begun)
    assert len(asyncio.all_tasks()) == before and not any(w._replies for w in waiters)


class LateFailing(Agent):
    """Fails after it waited."""

    async def reply(self, msg):
        await asyncio.sleep(0)
        raise ValueError(f"{self.name} lost count")


def mixed_agents(kernel, count):
    kinds = [Guesser, Waiter, Failing, Deferred, LateFailing, Odd]
    return [kinds[i % len(kinds)](f"a{i}", kernel=kernel) for i in range(count)]


async def test_a_round_of_every_kind_across_stretches(kernel, monkeypatch):
    monkeypatch.setattr(aopkit.pool, "YIELD_EVERY", 4)
    agents = mixed_agents(kernel, 30)
    for _ in range(2):
        replies = await aopkit.AgentPool(agents).reply_all(question())
        answered = [a.name for a in agents if type(a) in (Guesser, Waiter, Deferred)]
        failed = [a.name for a in agents if type(a) in (Failing, LateFailing, Odd)]
        assert [r.name for r in replies] == answered  # in agent order, whatever waited
        assert sorted(replies.failures) == sorted(failed)
    assert not any(a._replies for a in agents) and gc.isenabled()


async def test_replies_after_first_steps_that_failed_are_each_agents_own(kernel):
    """A stretch's first steps share one runner, made anew when a failure ends it: no reply is
    lost, repeated or given to another agent, whatever failed or waited before it."""
    kinds = [Guesser, Failing, Guesser, Failing, Failing, Deferred, Odd, Guesser, Waiter, Guesser]
    agents = [kind(f"a{i}", kernel=kernel) for i, kind in enumerate(kinds)]
    replies = await aopkit.AgentPool(agents).reply_all(question())
    answered = [a for a in agents if type(a) in (Guesser, Deferred, Waiter)]
    assert [r.name for r in replies] == [a.name for a in answered]
    assert [r.id for r in replies] == [a.memory[-1].id for a in answered]
    assert len({r.id for r in replies}) == len(replies)
    assert sorted(replies.failures) == ["a1", "a3", "a4", "a6"]
    assert [r.text for r in replies if r.name in ("a5", "a8")] == ["a5 deferred", "a8 waited"]


@pytest.mark.parametrize("ticks", range(12))
async def test_a_round_cancelled_at_any_await_leaves_nothing_behind(kernel, monkeypatch, ticks):
    monkeypatch.setattr(aopkit.pool, "YIELD_EVERY", 3)
    gate = asyncio.Event()
    agents = [*mixed_agents(kernel, 12), Waiter("gated", gate, kernel=kernel)]
    before = asyncio.all_tasks()
    running = asyncio.ensure_future(aopkit.AgentPool(agents).reply_all(question()))
    for _ in range(ticks):
        await asyncio.sleep(0)
    await cancelled(running)
    assert asyncio.all_tasks() == before and gc.isenabled()
    assert not any(a._replies for a in agents)
    for agent in agents:  # every memory is whole: the question alone, or the question answered
        assert [m.role for m in agent.memory] in ([], ["user"], ["user", "assistant"])
    gate.set()
    replies = await aopkit.AgentPool(agents).reply_all(question())
    assert len(replies) + len(replies.failures) == len(agents)


class Stubborn(Agent):
    """Swallows the cancellation of its reply and answers anyway."""

    async def reply(self, msg):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "not stopping"
        return "slept"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations")
async def test_a_reply_that_swallows_the_rounds_cancellation_does_not_end_it(kernel):
    agents = [Stubborn(f"s{i}", kernel=kernel) for i in range(3)]
    running = asyncio.ensure_future(aopkit.AgentPool(agents).reply_all(question()))
    while not all(a.memory for a in agents):
        await asyncio.sleep(0)
    await cancelled(running)  # raised, though the reply running in the round's task answered
    assert all(not a._replies for a in agents)


async def test_interrupting_a_pooled_reply_gives_the_interrupt_reply(kernel):
    gate = asyncio.Event()
    waiter = Waiter("w", gate, kernel=kernel)
    pool = aopkit.AgentPool([waiter])
    running = asyncio.ensure_future(pool.reply_all(question()))
    await asyncio.sleep(0)
    waiter.interrupt()
    (reply,) = await running
    assert reply.metadata == {"interrupted": True} and waiter.memory[-1] is reply


async def test_a_reply_runs_in_its_own_context(kernel):
    pool = aopkit.AgentPool([Speaker(f"s{i}", kernel=kernel) for i in range(3)])
    replies = await pool.reply_all(question())
    assert [r.text for r in replies] == ["None"] * 3
    assert SPEAKER.get() is None


async def test_hooks_and_hubs_take_the_ordinary_path(kernel):
    hooked = Guesser("hooked", kernel=kernel)
    hooked.add_hook(
        "post_reply", lambda agent, msg, reply: Msg(agent.name, "rewritten", "assistant")
    )
    listener = Guesser("listener", kernel=kernel)
    speaker = Guesser("speaker", kernel=kernel)
    pool = aopkit.AgentPool([hooked, speaker])
    async with aopkit.MsgHub([speaker, listener]):
        replies = await pool.reply_all(question())
    assert replies[0].text == "rewritten"
    assert replies[1] in listener.memory  # the hub's broadcast happened, as agent(msg) does


async def test_model_usage_is_charged_to_the_pooled_agent(kernel):
    agents = [
        aopkit.ModelAgent(f"m{i}", kernel.model("scripted:x", responses=["Hi."]), kernel=kernel)
        for i in range(2)
    ]
    pool = aopkit.AgentPool(agents)
    replies = await pool.reply_all("hello")
    assert len(replies) == 2 and all("usage" in r.metadata for r in replies)
    assert agents[1].usage.usage.calls == 1


def test_a_window_keeps_the_latest_messages():
    msgs = [Msg("u", str(i), "user") for i in range(5)]
    for window in (2, 40):  # a small window looks through its messages, a large one keeps ids
        memory = Memory(window=window)
        for msg in msgs:
            assert memory.add(msg)
        kept = msgs[-window:]
        assert memory.messages() == kept and len(memory) == len(kept)
        assert not memory.add(msgs[-1])  # still a duplicate within the window
        assert (msgs[0] in memory) is (window >= 5)
        if window == 2:
            assert memory.add(msgs[0])  # forgotten, so it may come back
            assert memory.messages() == [msgs[-1], msgs[0]]
        memory.remove(msgs[-1].id)
        assert msgs[-1] not in memory
        with pytest.raises(KeyError):
            memory.remove("nope")
        memory.clear()
        assert len(memory) == 0 and msgs[0] not in memory


@pytest.mark.parametrize("window", [None, 16, 17, 30])
def test_duplicates_are_refused_before_and_after_a_memory_grows_long(window):
    """A memory looks through its messages while it holds few (a million agents' memories
    then hold no set each), and keeps a set of their ids once it holds more than 16."""
    from aopkit.memory import SCAN

    msgs = [Msg("u", str(i), "user") for i in range(40)]
    memory = Memory(window=window)
    for i, msg in enumerate(msgs):
        assert memory.add(msg)
        assert not memory.add(msg) and not memory.add(msgs[max(0, i - 3)])
        grown = (window is None or window > SCAN) and i >= SCAN
        assert (memory._ids is not None) is grown, "a set only once it holds more than 16"
    kept = msgs if window is None else msgs[-window:]
    assert memory.messages() == kept
    assert all(m in memory for m in kept) and all(m not in memory for m in msgs[: -len(kept)])
    assert (memory._ids is not None) is (len(kept) > SCAN)
    assert [memory.add(m) for m in kept] == [False] * len(kept)
    memory.remove(kept[0].id)
    assert kept[0] not in memory and memory.add(kept[0])
    memory.clear()
    assert len(memory) == 0 and memory.add(kept[1])


def test_a_window_survives_state_and_sessions(kernel):
    agent = Guesser("g", memory=Memory(window=2), kernel=kernel)  # an empty Memory is falsy
    assert agent.memory.window == 2
    state = {"name": "g", "memory": [kernel.codec.dump(Msg("u", str(i), "user")) for i in range(4)]}
    agent.load_state_dict(state)
    assert [m.text for m in agent.memory] == ["2", "3"]
    assert agent.session("s").memory.window == 2


@pytest.mark.parametrize("window", [0, -1, 1.5, True, "2"])
def test_a_bad_window_is_refused(window):
    with pytest.raises(ConfigurationError, match="window"):
        Memory(window=window)


async def test_memory_stays_flat_over_many_rounds(kernel):
    agents = [Guesser(f"g{i}", memory=Memory(window=2), kernel=kernel) for i in range(50)]
    rounds = aopkit.Rounds(aopkit.pools(agents, 20))
    for _ in range(30):
        await rounds.play(question())
    assert {len(a.memory) for a in agents} == {2} and rounds.number == 30


async def test_a_big_round_yields_to_the_loop(kernel, monkeypatch):
    monkeypatch.setattr(aopkit.pool, "YIELD_EVERY", 10)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    pool = aopkit.AgentPool([Guesser(f"g{i}", kernel=kernel) for i in range(100)])
    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    await pool.reply_all(question())
    task.cancel()
    assert ticks >= 9


class Watcher(Agent):
    """Notes whether the collector runs in its reply's first step and, if it waits, after."""

    first_steps: ClassVar[list[bool]] = []
    later_steps: ClassVar[list[bool]] = []

    def __init__(self, name, waits, **kwargs):
        super().__init__(name, **kwargs)
        self.waits = waits

    async def reply(self, msg):
        self.first_steps.append(gc.isenabled())
        if self.waits:
            await asyncio.sleep(0)  # the rest runs beside the program's other tasks
            self.later_steps.append(gc.isenabled())
        return "seen"


async def ticking(round_):
    """(what ``round_`` returned, whether the collector ran at each tick of another task)."""
    seen = []

    async def ticker():
        while True:
            seen.append(gc.isenabled())
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    try:
        return await round_, seen[1:]
    finally:
        task.cancel()


@pytest.fixture
def watched(monkeypatch):
    monkeypatch.setattr(aopkit.pool, "YIELD_EVERY", 3)
    monkeypatch.setattr(Watcher, "first_steps", [])
    monkeypatch.setattr(Watcher, "later_steps", [])
    yield Watcher
    assert gc.isenabled()


async def test_the_collector_is_paused_while_replies_that_do_not_wait_run(kernel, watched):
    agents = [watched(f"w{i}", waits=False, kernel=kernel) for i in range(8)]
    replies, ticks = await ticking(aopkit.AgentPool(agents).reply_all(question()))
    assert len(replies) == 8 and watched.first_steps == [False] * 8
    assert ticks[:2] == [False, False]  # the stretches' yields: paused till the round ends
    assert gc.isenabled()


async def test_the_collector_runs_beside_replies_that_wait(kernel, watched):
    agents = [watched(f"w{i}", waits=True, kernel=kernel) for i in range(7)]
    pool = aopkit.AgentPool([*agents, Failing("bad", kernel=kernel)])
    replies, ticks = await ticking(pool.reply_all(question()))
    assert len(replies) == 7 and list(replies.failures) == ["bad"]
    assert watched.first_steps == [False] * 7 and watched.later_steps == [True] * 7
    assert len(ticks) >= 3 and all(ticks)


async def test_the_collector_resumes_when_the_last_of_concurrent_rounds_ends(kernel, watched):
    quick = aopkit.AgentPool([watched(f"q{i}", waits=False, kernel=kernel) for i in range(2)])
    long = aopkit.AgentPool([watched(f"l{i}", waits=False, kernel=kernel) for i in range(9)])
    ended = []

    async def round_(pool):
        await pool.reply_all(question())
        ended.append(gc.isenabled())

    await asyncio.gather(round_(long), round_(quick))
    assert ended == [False, True]  # the quick one ended while the long one ran


async def test_a_round_in_another_thread_keeps_the_collector_paused_past_this_ones(kernel):
    """The pause is process-wide: a round ending here must not resume the collector while a
    round in another thread's event loop is mid-stretch."""
    entered, release, seen = threading.Event(), threading.Event(), {}

    class Blocking(Agent):  # its first step holds its thread's loop until released
        async def reply(self, msg):
            entered.set()
            release.wait(10)
            return "released"

    def other_round():
        other = aopkit.Kernel(environ={})
        seen["replies"] = asyncio.run(aopkit.AgentPool([Blocking("b", kernel=other)]).reply_all())

    thread = threading.Thread(target=other_round)

    class Starter(Agent):  # its first step starts the other round and waits until it is in
        async def reply(self, msg):
            thread.start()
            assert entered.wait(10)
            return "started"

    try:
        await aopkit.AgentPool([Starter("s", kernel=kernel)]).reply_all(question())
        assert not gc.isenabled()  # the other thread's stretch still runs
    finally:
        release.set()
        await asyncio.to_thread(thread.join, 10)
    assert [r.text for r in seen["replies"]] == ["released"] and gc.isenabled()


async def test_a_round_that_stops_resumes_the_collector(kernel, watched):
    spender = aopkit.AgentPool([Guesser("g", kernel=kernel), BudgetSpender("s", kernel=kernel)])
    with pytest.raises(aopkit.BudgetExceeded):
        await spender.reply_all(question())
    assert gc.isenabled()
    agents = [watched(f"w{i}", waits=False, kernel=kernel) for i in range(9)]
    running = asyncio.ensure_future(aopkit.AgentPool(agents).reply_all(question()))
    await asyncio.sleep(0)  # cancelled at a stretch's yield
    await cancelled(running)
    assert 3 <= len(watched.first_steps) < 9


async def test_a_program_that_paused_the_collector_keeps_it_paused(kernel, watched):
    agents = [watched(f"w{i}", waits=i % 2, kernel=kernel) for i in range(7)]
    gc.disable()
    try:
        await aopkit.AgentPool(agents).reply_all(question())
        assert not gc.isenabled() and not any(watched.first_steps + watched.later_steps)
    finally:
        gc.enable()


def test_to_dist_without_the_ray_runtime_says_what_to_install(kernel):
    bare = aopkit.Kernel(environ={}, disable="ray")
    with pytest.raises(AopkitError, match=r"no runtime named 'ray'.*pip install 'aopkit\[ray\]'"):
        Guesser("g", kernel=bare).to_dist()


def test_the_ray_runtime_without_ray_says_what_to_install(kernel, monkeypatch):
    import aopkit_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "aopkit_ray._proxy", raising=False)
    monkeypatch.delitem(sys.modules, "aopkit_ray._host", raising=False)
    monkeypatch.delattr(aopkit_ray, "_proxy", raising=False)  # imported by earlier Ray tests
    monkeypatch.delattr(aopkit_ray, "_host", raising=False)
    with pytest.raises(AopkitError, match=r"needs Ray: pip install 'aopkit\[ray\]'"):
        aopkit.pools([Guesser("g", kernel=kernel)], 1, runtime="ray")
    with pytest.raises(AopkitError, match=r"needs Ray"):
        Guesser("g", kernel=kernel).to_dist()
    assert "ray" in kernel.runtimes and aopkit_ray.RayRuntime


async def test_a_pool_in_a_durable_run_journals_each_reply_and_replays_it(tmp_path, kernel):
    store = aopkit.SQLiteStore(tmp_path / "db")
    rounds = []
    for _ in range(2):
        agents = [Guesser(f"g{i}", kernel=kernel) for i in range(3)]
        async with aopkit.durable(store, "round"):
            rounds.append(await aopkit.AgentPool(agents).reply_all(question()))
    first, again = rounds
    assert len(first) == 3 and again == first  # ids and times too: replayed from the journal


async def test_pooled_replies_inside_a_reply_charge_their_own_and_the_enclosing_accounts(kernel):
    """A pool's replies share where they happen (the ledger, the enclosing reply), not their
    accounts: each charges its own agent, its own reply and the enclosing reply's agent, in
    its own kernel, however the pool mixes kernels."""
    other = aopkit.Kernel(environ={})
    kernels = [kernel, kernel, other, kernel]
    agents = [
        aopkit.ModelAgent(f"m{i}", k.model("scripted:x", responses=["Hi."] * 2), kernel=k)
        for i, k in enumerate(kernels)
    ]

    class Host(Agent):
        async def reply(self, msg: aopkit.agent.Incoming) -> Msg:
            replies = await aopkit.AgentPool(agents, kernel=kernel).reply_all("hello")
            assert [r.metadata["usage"]["calls"] for r in replies] == [1, 1, 1, 1]
            return Msg(self.name, "done", "assistant")

    host = Host("host", kernel=kernel)
    await host("go")
    await host("again")
    assert [a.usage.usage.calls for a in agents] == [2, 2, 2, 2]
    assert (kernel.usage.total.usage.calls, other.usage.total.usage.calls) == (6, 2)
    assert host.usage.usage.calls == 8
