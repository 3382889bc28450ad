"""A reply runs in the task that awaits it (no task of its own), in a context of its own, and
``interrupt()`` reaches exactly that reply: the caller's task, a pool's task, an outer agent
and a cancellation from elsewhere are each left as they were."""

import asyncio
import contextvars
import sys

import pytest

import aopkit
from aopkit import Agent, Msg

from .helpers import Echo, Recorder, Slow

MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("mark", default=None)


class Marking(Agent):
    """Sets a context variable in its reply and says what it saw there."""

    async def reply(self, msg):
        before = MARK.get()
        MARK.set(self.name)
        await asyncio.sleep(0)
        return Msg(self.name, f"{before}->{MARK.get()}", "assistant")


class Asking(Agent):
    """Asks ``other`` (awaited directly, in this reply's task) and passes on its answer."""

    def __init__(self, name, other, **kwargs):
        super().__init__(name, **kwargs)
        self.other = other
        self.heard: Msg | None = None

    async def reply(self, msg):
        self.heard = await self.other(msg)
        return Msg(self.name, f"heard: {self.heard.text}", "assistant")


class Swallowing(Slow):
    """Catches the cancellation an interrupt throws in and answers anyway."""

    async def reply(self, msg):
        try:
            return await super().reply(msg)
        except asyncio.CancelledError:
            return Msg(self.name, "not stopping", "assistant")


async def test_a_reply_makes_no_task_of_its_own(kernel, monkeypatch):
    made = []
    loop = asyncio.get_running_loop()
    create = loop.create_task
    monkeypatch.setattr(loop, "create_task", lambda *a, **k: made.append(a) or create(*a, **k))
    for _ in range(3):
        await Echo("e", kernel=kernel)(Msg("u", "x", "user"))
        await Marking("m", kernel=kernel)(Msg("u", "x", "user"))
    assert made == []


async def test_a_reply_runs_in_its_own_context(kernel):
    MARK.set("caller")
    reply = await Marking("m", kernel=kernel)(Msg("u", "x", "user"))
    assert reply.text == "caller->m"  # it sees the caller's values, its own stay its own
    assert MARK.get() == "caller"


async def asking_a_slow_agent(kernel):
    """(inner, outer, the outer call): the inner agent's reply has begun and waits."""
    inner = Slow("inner", 60, kernel=kernel)
    outer = Asking("outer", inner, kernel=kernel)
    call = asyncio.ensure_future(outer(Msg("u", "x", "user")))
    await inner.started.wait()
    return inner, outer, call


async def test_interrupting_an_agent_awaited_inside_another_reply_reaches_only_it(kernel):
    inner, outer, call = await asking_a_slow_agent(kernel)
    inner.interrupt()
    reply = await asyncio.wait_for(call, 5)
    assert outer.heard.metadata == {"interrupted": True}
    assert reply.text == "heard: I was interrupted." and not call.cancelled()
    assert not inner._replies and not outer._replies


async def test_interrupting_the_outer_agent_cancels_the_inner_reply_too(kernel):
    inner, outer, call = await asking_a_slow_agent(kernel)
    outer.interrupt()
    reply = await asyncio.wait_for(call, 5)
    assert reply.metadata == {"interrupted": True} and outer.heard is None
    assert inner.memory[-1].role == "user"  # the inner reply was cancelled, not answered


async def test_the_caller_goes_on_after_an_interrupt(kernel):
    agent = Slow("slow", 60, kernel=kernel)

    async def caller():
        reply = await agent(Msg("u", "x", "user"))
        await asyncio.sleep(0.01)  # a cancellation left pending would land here
        return reply

    call = asyncio.ensure_future(caller())
    await agent.started.wait()
    agent.interrupt()
    agent.interrupt()  # twice: still one cancellation, taken back once
    reply = await asyncio.wait_for(call, 5)
    assert reply.metadata == {"interrupted": True}
    if sys.version_info >= (3, 11):
        assert call.cancelling() == 0


async def interrupted(agent):
    """The call of ``agent`` (a ``Slow``), interrupted once its reply has begun."""
    call = asyncio.ensure_future(agent(Msg("u", "x", "user")))
    await agent.started.wait()
    agent.interrupt()
    return call


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations")
async def test_a_cancellation_from_elsewhere_wins_over_an_interrupt(kernel):
    agent = Slow("slow", 60, kernel=kernel)
    call = await interrupted(agent)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not agent._replies


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations")
async def test_an_interrupt_the_reply_swallowed_is_taken_back(kernel):
    agent = Swallowing("s", 60, kernel=kernel)
    call = await interrupted(agent)
    reply = await asyncio.wait_for(call, 5)
    assert reply.text == "not stopping" and call.cancelling() == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations")
async def test_a_cancellation_the_reply_swallowed_still_stops_the_caller(kernel):
    agent = Swallowing("s", 60, kernel=kernel)
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    call = asyncio.ensure_future(agent(Msg("u", "x", "user")))
    await agent.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [m.text for m in agent.memory] == ["x", "not stopping"]  # the reply is kept
    assert recorder.events[-1].type == "reply_finished" and not agent._replies


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11")
async def test_a_cancellation_taken_back_inside_the_reply_is_not_raised(kernel):
    class Timed(Agent):
        async def reply(self, msg):
            try:
                async with asyncio.timeout(0.01):  # cancels this task, then takes it back
                    await asyncio.sleep(60)
            except TimeoutError:
                return "timed out"

    assert (await Timed("t", kernel=kernel)("go")).text == "timed out"


async def test_an_agent_called_in_a_pooled_first_step_never_cancels_the_pool(kernel):
    inners = [Slow(f"inner{i}", 60, kernel=kernel) for i in range(3)]
    outers = [Asking(f"outer{i}", inner, kernel=kernel) for i, inner in enumerate(inners)]
    pool = aopkit.AgentPool(outers)
    running = asyncio.ensure_future(pool.reply_all(Msg("host", "go", "user")))
    for inner in inners:
        await inner.started.wait()
    inners[1].interrupt()
    for inner in (inners[0], inners[2]):
        inner.delay = 0
        inner.interrupt()
    replies = await asyncio.wait_for(running, 5)
    assert [r.text for r in replies] == ["heard: I was interrupted."] * 3
    assert not replies.failures


class TaskBound(Agent):
    """Binds its first step to the current task (a timeout, a task group), then waits."""

    def __init__(self, name, wait, **kwargs):
        super().__init__(name, **kwargs)
        self.wait, self.tasks = wait, []

    async def reply(self, msg):
        self.tasks.append(asyncio.current_task())
        async with asyncio.timeout(0.05):
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(self.wait))
        self.tasks.append(asyncio.current_task())
        return Msg(self.name, "in time", "assistant")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
async def test_a_pooled_reply_keeps_the_task_its_first_step_ran_in(kernel):
    agents = [TaskBound(f"t{i}", 60 if i % 2 else 0, kernel=kernel) for i in range(6)]
    caller = asyncio.current_task()
    replies = await asyncio.wait_for(aopkit.AgentPool(agents).reply_all("go"), 5)
    assert [r.name for r in replies] == ["t0", "t2", "t4"]  # the others timed out, alone
    assert set(replies.failures) == {"t1", "t3", "t5"}
    assert all(f.startswith("TimeoutError") for f in replies.failures.values())
    assert caller.cancelling() == 0
    for agent in agents[::2]:
        first, last = agent.tasks
        assert first is last  # the reply went on where its first step bound the timeout
    tasks = [agent.tasks[0] for agent in agents]
    assert len({id(t) for t in tasks}) == len(tasks)


async def test_interrupting_a_pooled_reply_that_waits(kernel):
    agents = [Slow(f"s{i}", 60, kernel=kernel) for i in range(3)]
    running = asyncio.ensure_future(aopkit.AgentPool(agents).reply_all(Msg("host", "go", "user")))
    for agent in agents:
        await agent.started.wait()
    for agent in agents:
        agent.interrupt()
    replies = await asyncio.wait_for(running, 5)
    assert [r.metadata for r in replies] == [{"interrupted": True}] * 3
    assert not any(agent._replies for agent in agents)
