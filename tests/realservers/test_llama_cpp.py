"""The OpenAI provider against llama.cpp's server (llama_cpp_python, ``chatml-function-calling``)
running a tiny model with random weights.

The answers are noise, so what is checked is the wire protocol: every request aopkit makes by
default is accepted (no 4xx/5xx), answers parse into the right shapes, streams end properly,
a multi-turn tool history is accepted, and a named tool choice gives a call of that tool (the
server constrains sampling with a grammar built from the tool's schema). Whether a model would
choose a tool by itself (``auto``) is not checked: a random model cannot be asked to.
"""

from __future__ import annotations

import itertools
import json
from typing import Literal

import pytest

from aopkit import ReActAgent, TextBlock, Toolkit, ToolResultBlock, ToolUseBlock
from aopkit.events import Retried
from aopkit.models import ChatResponse, ModelRejected, ToolSpec
from aopkit.retry import NO_RETRY, RetryPolicy
from tests.kernel.helpers import Recorder
from tests.realservers.conversation import ASK, history
from tests.realservers.metering import Meter

CITY = ToolSpec(
    "pick",
    "Pick a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
LIMITS = {"max_tokens": 64, "temperature": 0.0}  # room for a tool call's JSON


def pick(city: Literal["Paris", "Rome"]) -> str:
    """Pick a city."""
    return f"picked {city}"


@pytest.fixture
def model(kernel, llama_server):
    kernel.register(Meter(llama_server), "meter")

    def make(**options):
        extra_body = {**LIMITS, **options.pop("extra_body", {})}
        return kernel.model(
            "openai:tiny",
            base_url=f"{llama_server.base_url}/v1",
            retry=options.pop("retry", NO_RETRY),
            extra_body=extra_body,
            **options,
        )

    return make


def assert_answer(response: ChatResponse) -> None:
    assert isinstance(response, ChatResponse)
    assert response.finish_reason in ("stop", "length", "tool_calls")
    assert all(isinstance(b, (TextBlock, ToolUseBlock)) for b in response.content)
    assert response.usage is not None


async def test_a_plain_call(model):
    response = await model()([ASK])
    assert_answer(response)
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.id


async def test_a_streamed_call_ends_with_the_whole_answer(model):
    chunks = [c async for c in await model()([ASK], stream=True)]
    final = chunks[-1]
    assert_answer(final)
    assert final.finish_reason is not None
    for before, after in itertools.pairwise(chunks):
        assert after.text.startswith(before.text)  # cumulative


async def test_a_named_tool_choice_calls_that_tool(model):
    response = await model()([ASK], tools=[CITY], tool_choice="pick")
    (use,) = response.tool_uses
    assert use.name == "pick" and use.input["city"] in ("Paris", "Rome") and use.id


async def test_a_named_tool_choice_streams_the_call(model):
    chunks = [c async for c in await model()([ASK], tools=[CITY], tool_choice="pick", stream=True)]
    (use,) = chunks[-1].tool_uses
    assert use.name == "pick" and use.input["city"] in ("Paris", "Rome")


@pytest.mark.parametrize("choice", [None, "auto", "none"])
async def test_tools_with_other_choices_are_accepted(model, choice):
    response = await model()([ASK], tools=[CITY], tool_choice=choice)
    assert_answer(response)
    for use in response.tool_uses:
        assert use.name == "pick"


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_multi_turn_tool_history_is_accepted(model, strict, stream):
    """The issue's case: a turn of tool calls only used to go out with ``"content": null``,
    which this server answers with HTTP 500."""
    chosen = model(strict=strict)
    if stream:
        chunks = [c async for c in await chosen(history(), tools=[CITY], stream=True)]
        assert_answer(chunks[-1])
    else:
        assert_answer(await chosen(history(), tools=[CITY]))
    assert chosen.formatter.strict is strict


async def test_the_server_rejects_null_content_and_it_is_not_retried_as_transient(kernel, model):
    """What the server does with the old payload, and what tier 1 makes of it: the same HTTP
    500 twice, so one retry and then a rejection, not four attempts."""
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    chosen = model(retry=RetryPolicy(attempts=4, initial=0.01, max_wait=0.02, jitter=0.0))
    formatted = await chosen.format(history())
    formatted["messages"][2]["content"] = None

    async def old_payload(messages):
        return formatted

    chosen.format = old_payload
    with pytest.raises(ModelRejected, match="same HTTP 500 twice") as info:
        await chosen(history(), tools=[CITY])
    assert info.value.status == 500
    assert "valid string" in info.value.message  # the server's own explanation
    assert len(recorder.of(Retried)) == 1


async def test_a_react_agent_runs_three_steps(kernel, model):
    """Two tool steps and the closing answer. The tool choice is forced through the request
    body, since a random model never chooses a tool by itself; the histories the server gets in
    steps 2 and 3 are the agent's own (turns of calls only, then their results)."""
    forced = {"tool_choice": {"type": "function", "function": {"name": "pick"}}}
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    helper = ReActAgent(
        "helper",
        model(extra_body=forced),
        toolkit=Toolkit([pick], kernel=kernel),
        max_iters=2,
        kernel=kernel,
    )
    reply = await helper(ASK)
    assert reply.metadata.get("max_iters") is True
    results = [b for m in helper.memory for b in m.blocks(ToolResultBlock)]
    assert len(results) == 2
    assert all(r.output in ("picked Paris", "picked Rome") and not r.is_error for r in results)
    finished = [e for e in recorder.events if type(e).__name__ == "ModelCallFinished"]
    assert len(finished) == 3 and all(e.error is None for e in finished)
    json.dumps([e.usage for e in finished])  # usage is plain data
