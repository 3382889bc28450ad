from __future__ import annotations

import json

import attrs
import pytest

from aopkit import (
    Kernel,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownBlock,
)
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY
from aopkit.testing.conformance import WEATHER, growing
from aopkit.testing.fakes.anthropic import (
    Broken,
    Failure,
    FakeAnthropic,
    message,
    redacted,
    text,
    thinking,
    tool_use,
)
from aopkit_anthropic import ANSWER_TOOL, AnthropicModel

KEY = "sk-ant-FAKE-KEY-7c1d9e"
HI = [Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.fixture
async def fake(serve):
    server = FakeAnthropic()
    server.base_url = await server.start(serve)
    return server


@pytest.fixture
def model(kernel, fake):
    def make(**options):
        options = {"base_url": fake.base_url, "api_key": KEY, "retry": NO_RETRY, **options}
        return kernel.model("anthropic:claude-test", **options)

    return make


async def collect(stream):
    return [chunk async for chunk in stream]


async def test_a_call_sends_a_messages_request_and_reads_the_answer(fake, model):
    fake.then(message(text("Hello"), text(" world"), usage=(12, 7), cache_read=30))
    response = await model()(HI)
    assert response.text == "Hello world"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (42, 7)
    assert response.finish_reason == "end_turn" and response.id.startswith("msg_fake")
    body, headers = fake.requests[0], fake.headers[0]
    assert body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": [text("Be brief.")],
        "messages": [{"role": "user", "content": [text("hi")]}],
    }
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"


async def test_options_extra_body_and_headers_reach_the_request(fake, model):
    await model(
        max_tokens=512, extra_body={"stop_sequences": ["END"]}, headers={"anthropic-beta": "x"}
    )(HI)
    assert fake.requests[0]["max_tokens"] == 512 and fake.requests[0]["stop_sequences"] == ["END"]
    assert fake.headers[0]["anthropic-beta"] == "x"


async def test_key_and_base_url_from_the_kernels_environment(fake):
    environ = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.base_url + "/"}
    async with Kernel(environ=environ) as kernel:
        await kernel.model("anthropic:claude-test", retry=NO_RETRY)(HI)
    assert fake.headers[0]["x-api-key"] == KEY


async def test_options_from_the_config_file(fake, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[models.anthropic]\nbase_url = "{fake.base_url}"\napi_key = "{KEY}"\n'
        '[models."anthropic:claude-test"]\nmax_tokens = 1000\n'
    )
    async with Kernel(environ={"AOPKIT_CONFIG": str(config)}) as kernel:
        await kernel.model("anthropic:claude-test", retry=NO_RETRY)(HI)
    assert fake.requests[0]["max_tokens"] == 1000


async def test_parallel_tool_calls_and_tool_specs(fake, model):
    calls = [
        tool_use("toolu_1", "weather", {"city": "Paris"}),
        tool_use("toolu_2", "weather", {"city": "Rome"}),
    ]
    fake.then(message(text("Checking both."), *calls, stop_reason="tool_use"))
    response = await model()(HI, tools=[WEATHER])
    assert response.tool_uses == [
        ToolUseBlock("toolu_1", "weather", {"city": "Paris"}),
        ToolUseBlock("toolu_2", "weather", {"city": "Rome"}),
    ]
    assert response.text == "Checking both." and response.finish_reason == "tool_use"
    assert fake.requests[0]["tools"] == [
        {
            "name": "weather",
            "description": "Weather in a city.",
            "input_schema": WEATHER["parameters"],
        }
    ]
    assert "tool_choice" not in fake.requests[0]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ("weather", {"type": "tool", "name": "weather"}),
    ],
)
async def test_tool_choice(fake, model, choice, wire):
    await model()(HI, tools=[WEATHER], tool_choice=choice)
    assert fake.requests[0]["tool_choice"] == wire


async def test_one_tool_call_at_a_time_when_capabilities_say_so(fake, model):
    capabilities = attrs.evolve(AnthropicModel.capabilities, parallel_tool_calls=False)
    await model(capabilities=capabilities)(HI, tools=[WEATHER])
    assert fake.requests[0]["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


async def test_required_tool_choice_without_tools_is_refused(fake, model):
    with pytest.raises(ModelRejected, match="needs at least one tool"):
        await model()(HI, tool_choice="required")
    assert fake.requests == []


async def test_a_tool_round_trip_is_accepted_by_the_api(fake, model):
    fake.then(message(tool_use("toolu_1", "weather", {"city": "Paris"}), stop_reason="tool_use"))
    first = await model()(HI, tools=[WEATHER])
    history = [
        *HI,
        first.to_msg("claude"),
        Msg("tool", [ToolResultBlock("toolu_1", "weather", "sunny")], "user"),
    ]
    assert (await model()(history, tools=[WEATHER])).text == "ok"
    assert fake.requests[1]["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    }


async def test_streaming_is_cumulative_with_thinking_usage_and_finish_reason(fake, model):
    fake.then(
        message(
            thinking("Short answer.", "c2lnbmF0dXJl"), text("Hello there, world!"), usage=(5, 9)
        )
    )
    chunks = await collect(await model()(HI, stream=True))
    assert fake.requests[0]["stream"] is True
    texts = [c.text for c in chunks]
    assert growing(texts)
    thoughts = [b.thinking for c in chunks for b in c.content if isinstance(b, ThinkingBlock)]
    assert thoughts[0] != "Short answer." and thoughts[-1] == "Short answer."  # it grew
    last = chunks[-1]
    assert last.content == [
        ThinkingBlock("Short answer.", extra={"signature": "c2lnbmF0dXJl"}),
        TextBlock("Hello there, world!"),
    ]
    assert (last.usage.input_tokens, last.usage.output_tokens) == (5, 9)
    assert last.finish_reason == "end_turn" and last.id.startswith("msg_fake")
    assert all(c.usage is None for c in chunks[:-1])


async def test_streamed_tool_arguments_are_assembled_from_fragments(fake, model):
    args = {"city": "Saint-Rémy-de-Provence", "days": [1, 2, 3]}
    garbled = '{"city": "Rome", '
    fake.then(
        message(
            tool_use("toolu_1", "weather", args),
            tool_use("toolu_2", "weather", garbled),
            stop_reason="tool_use",
        )
    )
    chunks = await collect(await model()(HI, tools=[WEATHER], stream=True))
    assert chunks[-1].tool_uses == [
        ToolUseBlock("toolu_1", "weather", args),
        ToolUseBlock("toolu_2", "weather", {}, raw_input=garbled),  # kept verbatim, not guessed
    ]
    assert chunks[-1].finish_reason == "tool_use"


@pytest.mark.parametrize(
    ("kind", "error"),
    [("overloaded_error", ModelUnavailable), ("invalid_request_error", ModelRejected)],
)
async def test_stream_error_events_are_model_errors(fake, model, kind, error):
    fake.then(Broken(message(text("Hello there")), after=4, kind=kind, error="it broke"))
    with pytest.raises(error, match=f"{kind}: it broke"):
        await collect(await model()(HI, stream=True))


async def test_overloaded_529_is_retryable_with_the_api_message(fake, model):
    fake.then(Failure(529, "overloaded_error", "Overloaded"))
    with pytest.raises(ModelUnavailable) as info:
        await model()(HI)
    assert info.value.status == 529 and info.value.message == "overloaded_error: Overloaded"


async def test_structured_output_through_a_forced_tool(fake, model):
    fake.then(message(tool_use("toolu_1", ANSWER_TOOL, {"answer": 42}), stop_reason="tool_use"))
    response = await model()(HI, structured=SCHEMA)
    assert json.loads(response.text) == {"answer": 42}
    assert response.tool_uses == [] and response.finish_reason == "end_turn"
    body = fake.requests[0]
    assert body["tools"][-1]["name"] == ANSWER_TOOL and body["tools"][-1]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {
        "type": "tool",
        "name": ANSWER_TOOL,
        "disable_parallel_tool_use": True,
    }


async def test_streamed_structured_output_is_the_raw_arguments_text(fake, model):
    fake.then(message(tool_use("toolu_1", ANSWER_TOOL, {"answer": 42, "why": "six times seven"})))
    chunks = await collect(await model()(HI, structured=SCHEMA, stream=True))
    texts = [c.text for c in chunks]
    assert growing(texts)
    assert texts[-1] == json.dumps({"answer": 42, "why": "six times seven"})
    assert chunks[-1].content == [TextBlock(texts[-1])]


async def test_structured_output_needs_an_object_schema(fake, model):
    with pytest.raises(ModelRejected, match="must be an object"):
        await model()(HI, structured={"type": "array", "items": {"type": "integer"}})


async def test_extended_thinking_passes_through_and_does_not_force_tools(fake, model):
    thinking_on = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    await model(extra_body=thinking_on)(HI, structured=SCHEMA)
    assert fake.requests[0]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert fake.requests[0]["tool_choice"] == {
        "type": "auto"
    }  # the API refuses forcing with thinking


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_signatures_go_back_unchanged(fake, model, stream):
    reasoning = [
        thinking("The user wants Paris.", "RXFJc2lnbmF0dXJl"),
        redacted("EmwKAhgBEgy3va3pzix"),
    ]
    fake.then(
        message(
            *reasoning, tool_use("toolu_1", "weather", {"city": "Paris"}), stop_reason="tool_use"
        )
    )
    chat = model()
    first = await chat(HI, tools=[WEATHER], stream=stream)
    if stream:
        first = (await collect(first))[-1]
    assert first.content[1] == ThinkingBlock("", extra={"data": "EmwKAhgBEgy3va3pzix"})
    history = [
        *HI,
        first.to_msg("claude"),
        Msg("tool", [ToolResultBlock("toolu_1", "weather", "sunny")], "user"),
    ]
    await chat(history, tools=[WEATHER])
    assert fake.requests[1]["messages"][1]["content"] == [
        *reasoning,
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_server_tool_blocks_are_kept_and_sent_back_as_they_came(fake, model, stream):
    search = {
        "type": "server_tool_use",
        "id": "srvtoolu_1",
        "name": "web_search",
        "input": {"query": "aopkit"},
    }
    found = {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_1",
        "content": [
            {
                "type": "web_search_result",
                "url": "https://e.test/",
                "title": "E",
                "encrypted_content": "x",
            }
        ],
    }
    fake.then(message(search, found, text("Found it.")))
    chat = model()
    first = await chat(HI, stream=stream)
    if stream:
        first = (await collect(first))[-1]
    assert first.text == "Found it." and isinstance(first.content[0], UnknownBlock)
    await chat([*HI, first.to_msg("claude"), Msg("user", "thanks", "user")])
    assert fake.requests[1]["messages"][1]["content"] == [search, found, text("Found it.")]


async def test_the_multiagent_formatter_is_an_option(fake, model):
    chat = model(formatter="anthropic-multiagent")
    await chat([Msg("alice", "hi", "user"), Msg("bob", "hello", "assistant")])
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": [text("alice: hi\nbob: hello")]}
    ]
