import pytest

from aopkit import Msg, TextBlock, ToolUseBlock
from aopkit.events import ModelCallFinished, ModelCallStarted
from aopkit.models import ChatResponse, ModelUnavailable, Usage
from aopkit.retry import NO_RETRY
from aopkit_scripted import ScriptExhausted
from tests.kernel.helpers import Recorder

HI = [Msg("user", "hi", "user")]


async def test_returns_scripted_responses_in_order_and_records_calls(kernel):
    call = ToolUseBlock("c1", "search", {"q": "x"})
    model = kernel.model(
        "scripted:demo", responses=["first", [call], ChatResponse([TextBlock("3")])]
    )
    assert (await model(HI)).text == "first"
    second = await model(HI, tools=[{"name": "search", "parameters": {"type": "object"}}])
    assert second.tool_uses == [call] and second.finish_reason == "tool_use"
    assert (await model(HI)).text == "3"
    assert model.calls[1]["tools"][0].name == "search"
    with pytest.raises(ScriptExhausted, match="no response left for call 4"):
        await model(HI)


async def test_scripted_exceptions_are_raised(kernel):
    busy = ModelUnavailable("scripted:x", "busy", status=503)
    model = kernel.model("scripted:x", responses=[busy], retry=NO_RETRY)
    with pytest.raises(ModelUnavailable, match="HTTP 503"):
        await model(HI)


async def test_streaming_is_cumulative_and_ends_with_the_whole_answer(kernel):
    final = ChatResponse([TextBlock("hello there, world")], Usage(3, 4), "stop", "r1")
    model = kernel.model("scripted:x", responses=[final], chunk_size=5)
    chunks = [r async for r in await model(HI, stream=True)]
    texts = [c.text for c in chunks]
    assert texts == ["hello", "hello ther", "hello there, wo", "hello there, world"]
    assert chunks[-1] == final


async def test_model_calls_are_events(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    model = kernel.model("scripted:x", responses=["a", RuntimeError("boom")])
    await model(HI)
    with pytest.raises(RuntimeError):
        await model(HI)
    started, finished = recorder.of(ModelCallStarted), recorder.of(ModelCallFinished)
    assert [e.model for e in started] == ["scripted:x", "scripted:x"]
    assert [e.call_id for e in finished] == [e.call_id for e in started]
    assert finished[0].error is None and finished[0].usage["output_tokens"] == 1
    assert finished[1].error == "RuntimeError: boom"


async def test_tool_choice_must_name_a_given_tool(kernel):
    from aopkit.models import ModelRejected

    model = kernel.model("scripted:x", responses=["a"])
    with pytest.raises(ModelRejected, match="names no given tool"):
        await model(HI, tool_choice="missing")
