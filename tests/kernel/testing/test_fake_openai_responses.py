"""The fake server speaks the real protocol: the official ``openai`` client, pointed at it,
parses its answers and its event streams into the SDK's own types, and the SDK's stream helper
(which accumulates the events itself) builds the same final response the server sent."""

from __future__ import annotations

import openai
import pytest

from aopkit.testing.fakes.openai_responses import (
    Failure,
    FakeResponses,
    check_request,
    function_call,
    reasoning,
    response,
)

KEY = "sk-fake-server-check"


@pytest.fixture
async def client(serve):
    server = FakeResponses(key=KEY)
    await server.start(serve)
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    yield server, sdk
    await sdk.close()


def answer():
    return response(
        reasoning("First, the city."),
        function_call("call_1", "weather", {"city": "Rome"}),
        "It is sunny in Rome.",
    )


async def test_the_sdk_parses_a_plain_answer(client):
    server, sdk = client
    server.then(answer())
    parsed = await sdk.responses.create(model="gpt-fake", input="Weather in Rome?")
    assert parsed.output_text == "It is sunny in Rome."
    assert [item.type for item in parsed.output] == ["reasoning", "function_call", "message"]
    assert parsed.usage.input_tokens == 11


async def test_the_sdk_parses_every_streamed_event(client):
    server, sdk = client
    body = answer()
    server.then(body)
    stream = await sdk.responses.create(model="gpt-fake", input="Weather?", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in (
        "response.output_item.added",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_text.delta",
        "response.output_item.done",
    ):
        assert kind in kinds


async def test_the_sdks_own_accumulation_agrees_with_the_final_response(client):
    server, sdk = client
    server.then(answer())
    async with sdk.responses.stream(model="gpt-fake", input="Weather?") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "It is sunny in Rome."
    assert final.output[1].arguments == '{"city": "Rome"}'


async def test_the_sdk_sees_the_apis_errors(client):
    server, sdk = client
    server.then(Failure(429, "Rate limit reached.", type="requests", code="rate_limit_exceeded"))
    with pytest.raises(openai.RateLimitError, match="Rate limit reached"):
        await sdk.responses.create(model="gpt-fake", input="hi")


def test_requests_outside_the_official_types_are_refused():
    check_request({"model": "m", "input": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ValueError):
        check_request({"model": "m", "input": [{"role": "user", "content": "hi", "name": "x"}]})
    with pytest.raises(ValueError):
        check_request({"model": "m", "input": [{"type": "function_call_output", "output": 3}]})
