"""The OpenAI and Anthropic providers against LiteLLM's proxy, whose models are mocks
(``mock_response``, ``mock_tool_calls``): the proxy's own request validation, translation and
answers are real; nothing leaves the machine.

Checked: plain and streamed calls, tools with ``auto`` and a named choice, a multi-turn tool
history, a ReAct agent of three steps, and the Anthropic provider on the proxy's
``/v1/messages``. The mocks answer the same whatever the request says, so what is checked is
that every request is accepted and every answer parses, not what a model would choose. What
LiteLLM's mocks do not do (seen with litellm 1.108): a streamed answer carries the mock's text
but not its tool calls, and ``/v1/messages`` honours ``mock_response`` only for plain calls
(a streamed one gets a JSON body; ``mock_tool_calls`` is ignored there and the proxy calls the
upstream, which the config points at a closed loopback port). Those paths are not tested here.
"""

from __future__ import annotations

import pytest

from aopkit import (
    Msg,
    ReActAgent,
    TextBlock,
    ThinkingBlock,
    Toolkit,
    ToolResultBlock,
    ToolUseBlock,
)
from aopkit.models import ChatResponse, ToolSpec
from aopkit.retry import NO_RETRY
from tests.realservers.conftest import LITELLM_KEY
from tests.realservers.conversation import ASK, history
from tests.realservers.metering import Meter

CITY = ToolSpec(
    "pick",
    "Pick a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
MOCK_TEXT = "Rome, I would say."


@pytest.fixture
def model(kernel, litellm_server):
    kernel.register(Meter(litellm_server), "meter")

    def make(name: str = "mock-chat", provider: str = "openai", **options):
        base = litellm_server.base_url + ("/v1" if provider.startswith("openai") else "")
        return kernel.model(
            f"{provider}:{name}", base_url=base, api_key=LITELLM_KEY, retry=NO_RETRY, **options
        )

    return make


async def streamed(model, messages, **options) -> list[ChatResponse]:
    return [c async for c in await model(messages, stream=True, **options)]


async def test_a_plain_call(model):
    response = await model()([ASK])
    assert response.text == MOCK_TEXT
    assert response.finish_reason == "stop"
    assert response.id


async def test_a_streamed_call(model):
    chunks = await streamed(model(), [ASK])
    assert chunks[-1].text == MOCK_TEXT and chunks[-1].finish_reason == "stop"
    assert len(chunks) > 1  # it did stream


@pytest.mark.parametrize("choice", ["auto", "pick"])
async def test_tool_calls(model, choice):
    response = await model("mock-tools")([ASK], tools=[CITY], tool_choice=choice)
    (use,) = response.tool_uses
    assert (use.id, use.name, use.input) == ("call_mock_1", "pick", {"city": "Rome"})
    assert response.text == "This is a mock request"  # LiteLLM's mock text beside the calls


@pytest.mark.parametrize("choice", ["auto", "pick"])
async def test_a_streamed_call_with_tools_is_accepted(model, choice):
    chunks = await streamed(model("mock-tools"), [ASK], tools=[CITY], tool_choice=choice)
    assert chunks[-1].text == "This is a mock request"
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("strict", [False, True])
async def test_a_multi_turn_tool_history_is_accepted(model, strict):
    response = await model(strict=strict)(history(), tools=[CITY])
    assert response.text == MOCK_TEXT


async def test_a_react_agent_runs_three_steps(kernel, model):
    """Two tool steps, then the closing answer. A mock answers the same to every request, so
    the tool switches the agent to the text mock after its second run."""
    brain = model("mock-tools")
    runs = []

    def pick(city: str) -> str:
        """Pick a city."""
        runs.append(city)
        if len(runs) == 2:
            brain.model = "mock-chat"
        return f"picked {city}"

    helper = ReActAgent(
        "helper", brain, toolkit=Toolkit([pick], kernel=kernel), max_iters=2, kernel=kernel
    )
    reply = await helper(ASK)
    assert reply.text == MOCK_TEXT and reply.metadata.get("max_iters") is True
    results = [b for m in helper.memory for b in m.blocks(ToolResultBlock)]
    assert [r.output for r in results] == ["picked Rome", "picked Rome"]
    assert runs == ["Rome", "Rome"]


async def test_the_anthropic_provider_on_the_messages_endpoint(model):
    claude = model(provider="anthropic")
    response = await claude([Msg("system", "Be brief.", "system"), ASK])
    assert response.text == MOCK_TEXT
    assert response.finish_reason == "end_turn" and response.id


@pytest.mark.parametrize("choice", [None, "auto", "pick"])
async def test_the_anthropic_provider_with_tools_and_a_tool_history(model, choice):
    """Tools, a tool choice, and a history of a turn of calls only and its result, translated
    by the proxy from the Messages API to the chat completions of its (mock) model."""
    response = await model(provider="anthropic")(history(), tools=[CITY], tool_choice=choice)
    assert response.text == MOCK_TEXT


# The Responses API: the proxy serves /v1/responses and answers with its mock. What its mocks do
# not do there (seen with litellm 1.108): a streamed call is answered with an error event
# ("Error processing stream start", HTTP 500), and mock_tool_calls are ignored (the proxy calls
# the upstream). So the streamed and tool-calling answers are tested against the fake server
# only (aopkit.testing.fakes.openai_responses); here, that the proxy accepts every kind of request.


async def test_the_responses_provider(model):
    response = await model(provider="openai-responses")([Msg("system", "Be brief.", "system"), ASK])
    assert response.text == MOCK_TEXT
    assert response.finish_reason == "completed" and response.id.startswith("resp_")
    assert response.usage.input_tokens and response.usage.output_tokens


@pytest.mark.parametrize("choice", [None, "auto", "required", "none", "pick"])
async def test_the_responses_provider_with_tools_and_a_tool_history(model, choice):
    response = await model(provider="openai-responses")(history(), tools=[CITY], tool_choice=choice)
    assert response.text == MOCK_TEXT


async def test_the_responses_provider_sends_reasoning_back_with_its_items_ids(model):
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}
    turn = [
        ThinkingBlock("", extra={"reasoning_item": reasoning}),
        TextBlock("Let me pick.", extra={"item_id": "msg_1"}),
        ToolUseBlock("call_1", "pick", {"city": "Rome"}, extra={"item_id": "fc_1"}),
    ]
    messages = [
        *history()[:2],
        Msg("helper", turn, "assistant"),
        Msg("tools", [ToolResultBlock("call_1", "pick", "picked Rome")], "user"),
    ]
    response = await model(provider="openai-responses")(messages, tools=[CITY])
    assert response.text == MOCK_TEXT


async def test_the_responses_provider_with_structured_output(model):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response = await model(provider="openai-responses")([ASK], structured=schema)
    assert response.text == MOCK_TEXT  # the mock's text: what is checked is the request
