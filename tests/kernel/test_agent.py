import asyncio

import pytest

from aopkit import Agent, AopkitError, Msg, ReplyError
from aopkit.events import ReplyFailed, ReplyFinished, ReplyStarted

from .helpers import Echo, Failing, Recorder, Slow


async def test_call_stores_input_and_reply(kernel):
    agent = Echo("bob", kernel=kernel)
    question = Msg("alice", "hi", "user")
    reply = await agent(question)
    assert reply.text == "bob: hi"
    assert agent.memory.messages() == [question, reply]
    await agent(question)  # the same message again is not stored twice
    assert [m.id for m in agent.memory].count(question.id) == 1


async def test_hooks_rewrite_input_and_output(kernel):
    agent = Echo("bob", kernel=kernel)
    agent.add_hook("pre_reply", lambda a, msg: Msg(msg.name, msg.text.upper(), msg.role))

    async def sign(agent, msg, reply):
        return Msg(reply.name, reply.text + " -- bob", reply.role)

    agent.add_hook("post_reply", sign)
    reply = await agent(Msg("alice", "hi", "user"))
    assert reply.text == "bob: HI -- bob"
    assert agent.memory[-1] is reply
    assert agent.memory[0].text == "HI"


async def test_observe_hooks(kernel):
    agent = Echo("bob", kernel=kernel)
    seen = []
    agent.add_hook("pre_observe", lambda a, msg: Msg(msg.name, "[redacted]", msg.role))
    agent.add_hook("post_observe", lambda a, msg: seen.append(msg.text))
    await agent.observe(Msg("eve", "secret", "user"))
    assert seen == ["[redacted]"] and agent.memory[0].text == "[redacted]"


def test_unknown_hook_kind_is_refused():
    with pytest.raises(AopkitError, match="unknown hook kind 'before'"):
        Echo("x").add_hook("before", print)


async def test_a_failing_reply_raises_a_clear_error_and_emits_reply_failed(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    agent = Failing("broken", kernel=kernel)
    question = Msg("alice", "hi", "user")
    with pytest.raises(
        ReplyError, match="agent 'broken' failed to reply: ValueError: model returned"
    ):
        await agent(question)
    failed = recorder.of(ReplyFailed)
    assert len(failed) == 1 and "model returned nonsense" in failed[0].error
    assert agent.memory.messages() == [question]


async def test_reply_must_return_a_msg_or_a_str(kernel):
    class Plain(Agent):
        async def reply(self, msg):
            return "just a string"

    said = await Plain("p", kernel=kernel)()
    assert (said.name, said.text, said.role) == ("p", "just a string", "assistant")

    class Wrong(Agent):
        async def reply(self, msg):
            return 42

    with pytest.raises(ReplyError, match="reply\\(\\) must return a Msg or a str"):
        await Wrong("w", kernel=kernel)()


async def test_interrupt_cancels_the_reply_and_keeps_memory_consistent(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    agent = Slow("slow", 60, kernel=kernel)
    question = Msg("alice", "take your time", "user")
    call = asyncio.ensure_future(agent(question))
    await agent.started.wait()
    agent.interrupt()
    reply = await asyncio.wait_for(call, 5)
    assert reply.metadata == {"interrupted": True}
    assert agent.memory.messages() == [question, reply]
    finished = recorder.of(ReplyFinished)
    assert finished[-1].interrupted and finished[-1].msg_id == reply.id
    assert len(recorder.of(ReplyStarted)) == 1
    # the agent works normally afterwards
    agent.delay = 0
    assert (await agent(Msg("alice", "again", "user"))).text == "slow answer"


async def test_cancelling_the_caller_is_not_an_interrupt(kernel):
    agent = Slow("slow", 60, kernel=kernel)
    call = asyncio.ensure_future(agent(Msg("alice", "x", "user")))
    await agent.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not agent._replies


async def test_interrupt_when_idle_does_nothing(kernel):
    agent = Echo("e", kernel=kernel)
    agent.interrupt()
    assert (await agent(Msg("u", "x", "user"))).text == "e: x"


async def test_agents_use_the_default_kernel_unless_given_one():
    import aopkit

    assert Echo("e").kernel is aopkit.default_kernel()
