"""The ReAct agent and the user agent, driven by scripted models through every path."""

import asyncio
import time

import attrs
import pytest

from aopkit import (
    JSONFileStore,
    Msg,
    MsgHub,
    ReActAgent,
    TextBlock,
    Toolkit,
    ToolResultBlock,
    ToolUseBlock,
    UserAgent,
    load_session,
    save_session,
)
from aopkit.events import ReplyChunk
from aopkit.models import ChatResponse
from tests.kernel.helpers import Recorder

Q = Msg("user", "What is 6 times 7?", "user")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def call(name, call_id="c1", **arguments):
    return [ToolUseBlock(call_id, name, arguments)]


def agent(kernel, *responses, tools=(multiply,), **options):
    model = kernel.model("scripted:brain", responses=list(responses))
    return ReActAgent(
        "helper", model, toolkit=Toolkit(tools, kernel=kernel), kernel=kernel, **options
    )


def results(agent_):
    return [b for m in agent_.memory for b in m.blocks(ToolResultBlock)]


async def test_a_tool_call_then_the_answer(kernel):
    helper = agent(kernel, call("multiply", a=6, b=7), "It is 42.")
    reply = await helper(Q)
    assert reply.text == "It is 42."
    assert [r.output for r in results(helper)] == ["42"]
    roles = [(m.name, m.role) for m in helper.memory]
    assert roles == [
        ("user", "user"),
        ("helper", "assistant"),
        ("tools", "user"),
        ("helper", "assistant"),
    ]
    second = helper.model.calls[1]
    assert second["tools"][0].name == "multiply"
    assert second["messages"][-1].blocks(ToolResultBlock)[0].output == "42"


async def test_tool_failure_and_bad_arguments_go_back_to_the_model(kernel):
    def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    helper = agent(
        kernel,
        call("divide", a=1, b=0),
        call("divide", c2="x", call_id="c2"),
        "I cannot divide by zero.",
        tools=(divide,),
    )
    reply = await helper(Q)
    assert reply.text == "I cannot divide by zero."
    first, second = results(helper)
    assert first.is_error and first.output == "ZeroDivisionError: division by zero"
    assert second.is_error and "invalid arguments" in second.output


@pytest.mark.parametrize("parallel", [True, False])
async def test_arguments_are_converted_once_per_call_and_each_call_gets_its_own(kernel, parallel):
    """The fault tiers check a call's arguments before it runs; the tool then gets what that
    check made of them, not a second conversion, and two calls of one tool in one step each
    get their own."""

    @attrs.frozen
    class Point:
        x: int
        y: int

    made = []

    def point_hook(value, _):
        made.append(value)
        return Point(**value)

    kernel.codec.converter.register_structure_hook(Point, point_hook)

    def norm(p: Point) -> int:
        """The taxicab length of a point."""
        return abs(p.x) + abs(p.y)

    uses = [
        ToolUseBlock("c1", "norm", {"p": {"x": 3, "y": -4}}),
        ToolUseBlock("c2", "norm", {"p": {"x": 1, "y": 1}}),
    ]
    helper = agent(kernel, uses, "done", tools=(norm,), parallel=parallel)
    await helper(Q)
    assert [r.output for r in results(helper)] == ["7", "2"]
    assert made == [{"x": 3, "y": -4}, {"x": 1, "y": 1}]


async def test_parallel_tool_calls_run_concurrently(kernel):
    async def slow(n: int) -> int:
        """Wait a little."""
        await asyncio.sleep(0.2)
        return n

    uses = [ToolUseBlock(f"c{i}", "slow", {"n": i}) for i in range(3)]
    helper = agent(kernel, uses, "done", tools=(slow,))
    started = time.perf_counter()
    await helper(Q)
    assert time.perf_counter() - started < 0.5, "three 0.2 s tools should overlap"
    tool_msg = [m for m in helper.memory if m.name == "tools"]
    assert len(tool_msg) == 1, "parallel results stay together in one message"
    assert [r.id for r in tool_msg[0].blocks(ToolResultBlock)] == ["c0", "c1", "c2"]


async def test_max_iters_ends_with_a_closing_summary(kernel):
    helper = agent(
        kernel,
        call("multiply", a=1, b=1),
        call("multiply", a=2, b=2, call_id="c2"),
        "I ran out of steps; so far 1 and 4.",
        max_iters=2,
    )
    reply = await helper(Q)
    assert reply.metadata["max_iters"] is True and "usage" in reply.metadata
    closing = helper.model.calls[-1]
    assert closing["tools"] == [] and "used all your steps" in closing["messages"][-1].text


async def test_interrupt_answers_every_pending_tool_call(kernel):
    started = asyncio.Event()

    async def wait_forever(n: int) -> int:
        """Never returns."""
        started.set()
        await asyncio.sleep(3600)
        return n

    uses = [
        ToolUseBlock("a", "wait_forever", {"n": 1}),
        ToolUseBlock("b", "wait_forever", {"n": 2}),
    ]
    helper = agent(kernel, uses, "fine", tools=(wait_forever,))
    running = asyncio.ensure_future(helper(Q))
    await started.wait()
    helper.interrupt()
    reply = await asyncio.wait_for(running, 5)
    assert reply.metadata["interrupted"] is True
    assert reply.metadata["usage"]["calls"] == 1  # the call made before the interrupt
    answered = {r.id: r for r in results(helper)}
    assert set(answered) == {"a", "b"} and all(r.is_error for r in answered.values())
    # the history is valid: the next reply works and the model sees every call answered
    assert (await helper(Msg("user", "never mind", "user"))).text == "fine"


async def test_structured_output_after_acting(kernel):
    @attrs.frozen
    class Answer:
        value: int
        shown_work: bool

    helper = agent(kernel, call("multiply", a=6, b=7), "42", '{"value": "42", "shown_work": true}')
    assert await helper(Q, structured=Answer) == Answer(42, True)
    assert kernel.faults.faults[0].resolver == "coerce"


async def test_the_model_text_streams_to_observers(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    helper = agent(kernel, "Forty-two, as it happens.", stream=True)
    helper.model.chunk_size = 6
    reply = await helper(Q)
    chunks = [e.text for e in recorder.of(ReplyChunk)]
    assert chunks[0] == "Forty-" and chunks[-1] == reply.text == "Forty-two, as it happens."


async def test_compress_hook_shapes_what_the_model_sees(kernel):
    async def last_two(messages):
        return messages[-2:]

    helper = agent(kernel, "a", "b", compress=last_two)
    await helper(Msg("user", "one", "user"))
    await helper(Msg("user", "two", "user"))
    assert [m.text for m in helper.model.calls[1]["messages"]] == ["a", "two"]
    assert len(helper.memory) == 4, "memory itself keeps everything"


async def test_save_and_restore_mid_conversation(kernel, tmp_path):
    store = JSONFileStore(tmp_path)
    helper = agent(kernel, call("multiply", a=6, b=7), "42")
    await helper(Q)
    await save_session(store, "s", helper)
    restored = agent(kernel, "Still 42.")
    await load_session(store, "s", restored)
    assert restored.memory.messages() == helper.memory.messages()
    assert (await restored(Msg("user", "sure?", "user"))).text == "Still 42."
    seen = restored.model.calls[0]["messages"]
    assert seen[2].blocks(ToolResultBlock)[0].output == "42"


async def test_sessions_of_one_definition_never_share_memory(kernel):
    helper = agent(kernel, "for alice", "for bob")
    alice, bob = helper.session("alice"), helper.session("bob")
    assert helper.session("alice") is alice
    await asyncio.gather(alice(Msg("alice", "hi", "user")), bob(Msg("bob", "yo", "user")))
    assert alice.memory[0].text == "hi"
    assert bob.memory[0].text == "yo"
    assert len(helper.memory) == 0 and alice.toolkit is helper.toolkit


async def test_a_session_not_kept_is_new_each_time_and_not_remembered(kernel):
    helper = agent(kernel, "one")
    first = helper.session("c", keep=False)
    await first(Msg("user", "hi", "user"))
    again = helper.session("c", keep=False)
    assert again is not first and len(again.memory) == 0 and again.session_id == "c"
    assert helper.session("c") is not first  # the kept one is yet another
    assert helper._sessions is not None and list(helper._sessions) == ["c"]


async def test_user_agent_takes_input_from_its_source(kernel):
    typed = iter(["I think tea.", "Definitely tea."])

    async def keyboard(agent, msg):
        return next(typed)

    user = UserAgent("dana", input=keyboard, kernel=kernel)
    helper = agent(kernel, "Tea it is.")
    async with MsgHub([user, helper]):
        said = await user()
        await helper()
    assert said.text == "I think tea." and said.role == "user" and said.name == "dana"
    assert [m.text for m in helper.memory] == ["I think tea.", "Tea it is."]
    assert [b.text for b in user.memory[-1].blocks(TextBlock)] == ["Tea it is."]


def test_the_default_input_source_is_the_terminal():
    from aopkit.user import terminal_input

    assert UserAgent().input is terminal_input


@pytest.mark.parametrize("parallel", [True, False])
async def test_sequential_mode_runs_calls_one_by_one(kernel, parallel):
    order = []

    async def log(n: int) -> int:
        """Record the order."""
        order.append(("start", n))
        await asyncio.sleep(0.01)
        order.append(("end", n))
        return n

    uses = [ToolUseBlock("a", "log", {"n": 1}), ToolUseBlock("b", "log", {"n": 2})]
    await agent(kernel, uses, "ok", tools=(log,), parallel=parallel)(Q)
    sequential = order == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert sequential is not parallel


@pytest.mark.parametrize(
    ("raw", "corrector"),
    [('{"a": 6, "b": 7,}', "json-repair"), ('{"a": "6", "b": 7}', "coerce")],
)
async def test_malformed_tool_arguments_are_repaired_before_the_tool_runs(kernel, raw, corrector):
    bad = ToolUseBlock("c1", "multiply", {}, raw_input=raw)
    if corrector == "coerce":
        bad = ToolUseBlock("c1", "multiply", {"a": "6", "b": 7})
    helper = agent(kernel, [bad], "42")
    await helper(Q)
    [result] = results(helper)
    assert not result.is_error and result.output == "42"
    stored = helper.memory[1].blocks(ToolUseBlock)[0]
    assert stored.input == {"a": 6, "b": 7} and stored.raw_input is None
    [fault] = kernel.faults.faults
    assert (fault.tier, fault.resolver, fault.saved) == (2, corrector, 1)
    assert len(helper.model.calls) == 2


async def test_tool_arguments_cut_by_the_token_limit_are_not_repaired(kernel):
    bad = ToolUseBlock("c1", "multiply", {}, raw_input="{'a': 6, 'b': 7}")
    cut = ChatResponse([bad], finish_reason="length")
    helper = agent(kernel, cut, call("multiply", a=6, b=7), "42")
    assert (await helper(Q)).text == "42"
    first, second = results(helper)
    assert first.is_error and second.output == "42"
    [fault] = kernel.faults.faults
    assert fault.detail.startswith(
        "the output was cut off by the token limit (finish reason 'length')"
    )
    assert (fault.tier, fault.resolver, fault.saved) == (3, "self (tool error result)", 0)


async def test_unfixable_tool_arguments_go_back_to_the_model_as_tier_3(kernel):
    helper = agent(kernel, call("multiply", a="six", b=7), call("multiply", a=6, b=7), "42")
    assert (await helper(Q)).text == "42"
    first, second = results(helper)
    assert first.is_error and "a: expected an integer" in first.output
    assert second.output == "42"
    [fault] = kernel.faults.faults
    assert (fault.kind, fault.tier, fault.resolver, fault.calls) == (
        "invalid",
        3,
        "self (tool error result)",
        1,
    )


async def test_the_chat_log_shows_tools_being_used(kernel):
    from loguru import logger

    from aopkit import ChatLog

    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="CHAT")
    kernel.register(ChatLog(), "chat")
    try:
        await agent(kernel, call("multiply", a=6, b=7), "It is 42.")(Q)
    finally:
        logger.remove(sink)
    assert lines == [
        'helper: → multiply({"a": 6, "b": 7})',
        "tools: ← multiply: 42",
        "helper: It is 42.",
    ]
