from __future__ import annotations

import attrs
import pytest

from aopkit import Kernel, Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY, RetryPolicy
from aopkit.testing.conformance import WEATHER, growing
from aopkit.testing.fakes.openai import (
    Broken,
    Failure,
    FakeOpenAI,
    Interleaved,
    call,
    completion,
)
from aopkit_openai import ANSWER_TOOL, DEFAULT_BASE_URL, SCHEMA_NAME, OpenAIModel

KEY = "sk-proj-FAKE-KEY-3e9b1f"
HI = [Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, max_wait=0.05, jitter=0.0)


@pytest.fixture
async def fake(serve):
    server = FakeOpenAI(key=KEY)
    await server.start(serve)
    return server


@pytest.fixture
def model(kernel, fake):
    def make(**options):
        options = {"base_url": fake.base_url, "api_key": KEY, "retry": NO_RETRY, **options}
        return kernel.model("openai:gpt-test", **options)

    return make


async def collect(stream):
    return [chunk async for chunk in stream]


async def test_a_call_posts_chat_completions_and_reads_the_answer(fake, model):
    fake.then(completion("Hello world", usage=(12, 7)))
    response = await model()(HI)
    assert response.content == [TextBlock("Hello world")]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 7)
    assert response.finish_reason == "stop" and response.id.startswith("chatcmpl-fake")
    assert fake.requests[0] == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi", "name": "user"},
        ],
    }
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_the_default_endpoint_and_capabilities(kernel):
    model = kernel.model("openai:gpt-test", environ={})
    assert model.base_url == DEFAULT_BASE_URL == "https://api.openai.com/v1"
    assert model.capabilities.structured_output and model.capabilities.media >= {"image", "audio"}
    custom = attrs.evolve(OpenAIModel.capabilities, media=frozenset())
    assert kernel.model("openai:x", capabilities=custom, environ={}).capabilities is custom


async def test_key_and_base_url_from_the_kernels_environment(fake):
    environ = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url + "/"}
    async with Kernel(environ=environ) as kernel:
        response = await kernel.model("openai:gpt-test", retry=NO_RETRY)(HI)
    assert response.text == "ok" and fake.headers[0]["Authorization"] == f"Bearer {KEY}"


async def test_options_from_the_config_file(fake, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[models.openai]\nbase_url = "{fake.base_url}"\napi_key = "{KEY}"\n'
        '[models."openai:gpt-test"]\nextra_body = { temperature = 0.25 }\n'
    )
    async with Kernel(environ={"AOPKIT_CONFIG": str(config)}) as kernel:
        await kernel.model("openai:gpt-test", retry=NO_RETRY)(HI)
    assert fake.requests[0]["temperature"] == 0.25


async def test_a_compatible_server_without_a_key(serve):
    server = FakeOpenAI()  # takes any key, or none, like a local vLLM or llama.cpp server
    await server.start(serve)
    async with Kernel(environ={}) as kernel:
        model = kernel.model("openai:local", base_url=server.base_url, retry=NO_RETRY)
        assert (await model(HI)).text == "ok"
    assert "Authorization" not in server.headers[0]


async def test_parallel_tool_calls_and_tool_specs(fake, model):
    calls = [
        call("call_1", "weather", {"city": "Paris"}),
        call("call_2", "weather", {"city": "Rome"}),
    ]
    fake.then(completion("Checking both.", tool_calls=calls))
    response = await model()(HI, tools=[WEATHER])
    assert response.tool_uses == [
        ToolUseBlock("call_1", "weather", {"city": "Paris"}),
        ToolUseBlock("call_2", "weather", {"city": "Rome"}),
    ]
    assert response.text == "Checking both." and response.finish_reason == "tool_calls"
    assert fake.requests[0]["tools"] == [{"type": "function", "function": WEATHER}]
    assert "tool_choice" not in fake.requests[0]
    assert "parallel_tool_calls" not in fake.requests[0]


async def test_arguments_that_are_not_a_json_object_are_kept_verbatim(fake, model):
    fake.then(completion(tool_calls=[call("call_1", "weather", '{"city": "Par')]))
    (use,) = (await model()(HI, tools=[WEATHER])).tool_uses
    assert use.input == {} and use.raw_input == '{"city": "Par'


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("weather", {"type": "function", "function": {"name": "weather"}}),
    ],
)
async def test_tool_choice(fake, model, choice, wire):
    await model()(HI, tools=[WEATHER], tool_choice=choice)
    assert fake.requests[0]["tool_choice"] == wire


async def test_required_tool_choice_without_tools_is_refused(fake, model):
    with pytest.raises(ModelRejected, match="needs at least one tool"):
        await model()(HI, tool_choice="required")
    assert fake.requests == []


async def test_one_tool_call_at_a_time_when_capabilities_say_so(fake, model):
    capabilities = attrs.evolve(OpenAIModel.capabilities, parallel_tool_calls=False)
    await model(capabilities=capabilities)(HI, tools=[WEATHER])
    assert fake.requests[0]["parallel_tool_calls"] is False


async def test_a_tool_round_trip_is_accepted_by_the_api(fake, model):
    fake.then(completion(tool_calls=[call("call_1", "weather", {"city": "Paris"})]))
    first = await model()(HI, tools=[WEATHER])
    history = [
        *HI,
        first.to_msg("gpt"),
        Msg("tools", [ToolResultBlock("call_1", "weather", "sunny")], "user"),
    ]
    assert (await model()(history, tools=[WEATHER])).text == "ok"
    assert fake.requests[1]["messages"][2:] == [
        {
            "role": "assistant",
            "name": "gpt",
            "content": "",
            "tool_calls": [call("call_1", "weather", '{"city": "Paris"}')],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


async def test_structured_output_is_native(fake, model):
    fake.then(completion('{"answer": 42}'))
    response = await model()(HI, structured=SCHEMA)
    assert response.text == '{"answer": 42}'
    assert fake.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": SCHEMA},
    }


async def test_structured_output_strictness_through_extra_body(fake, model):
    strictly = {"response_format": {"json_schema": {"strict": True}}}
    await model(extra_body=strictly)(HI, structured=SCHEMA)
    assert fake.requests[0]["response_format"]["json_schema"] == {
        "name": SCHEMA_NAME,
        "schema": SCHEMA,
        "strict": True,
    }


async def test_structured_output_through_a_forced_tool_when_not_native(fake, model):
    capabilities = attrs.evolve(OpenAIModel.capabilities, structured_output=False)
    answer = call("call_9", ANSWER_TOOL, '{"answer": 42}')
    fake.then(completion(tool_calls=[answer]), completion(tool_calls=[answer]))
    response = await model(capabilities=capabilities)(HI, structured=SCHEMA)
    assert response.content == [TextBlock('{"answer": 42}')]
    assert response.tool_uses == [] and response.finish_reason == "stop"
    sent = fake.requests[0]
    assert "response_format" not in sent
    assert sent["tools"][-1]["function"]["name"] == ANSWER_TOOL
    assert sent["tools"][-1]["function"]["parameters"] == SCHEMA
    assert sent["tool_choice"] == {"type": "function", "function": {"name": ANSWER_TOOL}}
    chunks = await collect(
        await model(capabilities=capabilities)(HI, structured=SCHEMA, stream=True)
    )
    assert growing([c.text for c in chunks]) and chunks[-1].text == '{"answer": 42}'
    assert chunks[-1].tool_uses == [] and chunks[-1].finish_reason == "stop"


async def test_a_forced_tool_needs_an_object_schema(fake, model):
    capabilities = attrs.evolve(OpenAIModel.capabilities, structured_output=False)
    with pytest.raises(ModelRejected, match="object at the root"):
        await model(capabilities=capabilities)(HI, structured={"type": "array"})


async def test_a_stream_asks_for_usage_and_keeps_the_completion_id(fake, model):
    """The rest of a stream's behaviour is in the conformance suite (test_conformance.py)."""
    fake.then(completion("Hello there, world!", usage=(5, 9)))
    chunks = await collect(await model()(HI, stream=True))
    sent = fake.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert chunks[-1].id.startswith("chatcmpl-fake")


async def test_streamed_parallel_tool_calls_interleaved_are_assembled_by_index(fake, model):
    """The calls' argument fragments alternate (in order: the conformance suite)."""
    args = {"city": "Saint-Rémy-de-Provence", "days": [1, 2, 3]}
    body = completion(
        "On it.",
        tool_calls=[call("call_1", "weather", args), call("call_2", "weather", {"city": "Rome"})],
    )
    fake.then(Interleaved(body))
    chunks = await collect(await model()(HI, tools=[WEATHER], stream=True))
    assert all(c.tool_uses == [] for c in chunks[:-1])  # calls show once whole
    assert chunks[-1].tool_uses == [
        ToolUseBlock("call_1", "weather", args),
        ToolUseBlock("call_2", "weather", {"city": "Rome"}),
    ]
    assert chunks[-1].text == "On it." and chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("kind", "error"),
    [("server_error", ModelUnavailable), ("invalid_request_error", ModelRejected)],
)
async def test_an_error_in_the_stream_is_mapped(fake, model, kind, error):
    fake.then(Broken(completion("Hello there, world!"), after=2, kind=kind))
    with pytest.raises(error, match=f"{kind}: The server had an error"):
        await collect(await model()(HI, stream=True))


async def test_an_error_body_with_status_200_is_an_error(fake, model):
    fake.then({"error": {"message": "Upstream timed out.", "type": "server_error"}})
    with pytest.raises(ModelUnavailable, match="server_error: Upstream timed out"):
        await model()(HI)


async def test_tool_calls_without_ids_get_one(fake, model):
    """Some compatible servers leave the id out; the result must still be paired by one."""
    body = completion(
        tool_calls=[{"type": "function", "function": call("", "clock", {})["function"]}]
    )
    fake.then(body)
    (use,) = (await model()(HI, tools=[WEATHER])).tool_uses
    assert use.id.startswith("call_") and len(use.id) > 5 and use.name == "clock"


async def test_deepseek_reasoning_is_kept_and_sent_back_when_asked(fake, model):
    deepseek = model(send_reasoning=True)
    fake.allow = frozenset({"reasoning_content"})
    thought = "The user wants weather; call the tool."
    fake.then(
        completion(reasoning=thought, tool_calls=[call("call_1", "weather", {"city": "Oslo"})])
    )
    first = await deepseek(HI, tools=[WEATHER])
    assert first.content[0] == ThinkingBlock(thought)
    history = [
        *HI,
        first.to_msg("ds"),
        Msg("tools", [ToolResultBlock("call_1", "weather", "-3")], "user"),
    ]
    await deepseek(history, tools=[WEATHER])
    assert fake.requests[1]["messages"][2]["reasoning_content"] == thought


async def test_strict_mode_payload_through_the_model(fake, model):
    await model(strict=True)([Msg("Alice", [TextBlock("a"), TextBlock("b")], "user")])
    assert fake.requests[0]["messages"] == [{"role": "user", "content": "a\nb"}]


async def test_a_refusal_is_text_marked_as_such(fake, model):
    fake.then(completion(refusal="I can't help with that."))
    response = await model()(HI)
    assert response.content == [TextBlock("I can't help with that.", extra={"refusal": True})]


async def test_a_wait_in_retry_after_ms_is_honoured(fake, model):
    headers = {"retry-after-ms": "1500"}  # Retry-After itself: the conformance suite
    fake.then(
        Failure(429, "Rate limit reached.", "requests", "rate_limit_exceeded", headers=headers)
    )
    with pytest.raises(ModelUnavailable, match="Rate limit reached") as info:
        await model()(HI)
    assert info.value.status == 429 and info.value.retry_after == 1.5


async def test_the_payload_is_a_valid_request_for_every_kind_of_call(fake, model):
    """The fake server checks each request against the official types; a bad one is a 400."""
    capabilities = attrs.evolve(OpenAIModel.capabilities, structured_output=False)
    history = [*HI, Msg("bot", [ToolUseBlock("c1", "weather", {"city": "Oslo"})], "assistant")]
    history.append(Msg("tools", [ToolResultBlock("c1", "weather", "-3")], "user"))
    await model()(history, tools=[WEATHER], tool_choice="weather")
    await collect(await model()(history, structured=SCHEMA, stream=True))
    await model(capabilities=capabilities)(history, tools=[WEATHER], structured=SCHEMA)
    assert [r.get("stream", False) for r in fake.requests] == [False, True, False]
