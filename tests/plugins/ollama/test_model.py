from __future__ import annotations

import base64
import json

import pytest

from aopkit import (
    Base64Source,
    ImageBlock,
    Kernel,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY
from aopkit.testing.conformance import WEATHER, growing
from aopkit.testing.fakes.ollama import Answer, Broken, Failure, FakeOllama, call
from aopkit_ollama import DEFAULT_BASE_URL, OllamaModel

KEY = "ol-proxy-FAKE-KEY-93c2aa"
HI = [Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")]
TIME = {"name": "time", "parameters": {"type": "object", "properties": {}}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
REQUIRED = "You must answer by calling one of the tools you are given; do not answer in text."


@pytest.fixture
async def fake(serve):
    server = FakeOllama()
    server.base_url = await server.start(serve)
    return server


@pytest.fixture
def model(kernel, fake):
    def make(name="llama3.2", **options):
        options = {"base_url": fake.base_url, "retry": NO_RETRY, **options}
        return kernel.model(f"ollama:{name}", **options)

    return make


async def collect(stream):
    return [chunk async for chunk in stream]


async def test_a_call_sends_a_chat_request_and_reads_the_answer(fake, model):
    fake.then(Answer("Hello world", counts=(26, 4)))
    chat = model()
    response = await chat(HI)
    assert response.content == [TextBlock("Hello world")] and response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (26, 4)
    assert fake.requests[0] == {
        "model": "llama3.2",
        "stream": False,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
    }
    assert "Authorization" not in fake.headers[0]  # no key is needed


async def test_the_default_base_url_is_the_local_server(kernel):
    assert kernel.model("ollama:llama3.2").base_url == DEFAULT_BASE_URL


async def test_base_url_and_an_optional_key_from_the_kernels_environment(serve):
    fake = FakeOllama(key=KEY)
    base_url = await fake.start(serve)
    environ = {"OLLAMA_BASE_URL": base_url + "/", "OLLAMA_API_KEY": KEY}
    async with Kernel(environ=environ) as kernel:
        assert (await kernel.model("ollama:llama3.2", retry=NO_RETRY)(HI)).text == "ok"
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"


async def test_options_from_the_config_file(fake, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[models.ollama]\nbase_url = "{fake.base_url}"\n'
        '[models."ollama:qwen3"]\nthink = true\n'
        'extra_body = { options = { num_ctx = 8192 }, keep_alive = "10m" }\n'
    )
    async with Kernel(environ={"AOPKIT_CONFIG": str(config)}) as kernel:
        await kernel.model("ollama:qwen3", retry=NO_RETRY)(HI)
    request = fake.requests[0]
    assert request["think"] is True and request["options"] == {"num_ctx": 8192}
    assert request["keep_alive"] == "10m"


async def test_parallel_tool_calls_come_whole_with_ids(fake, model):
    calls = (
        call("weather", {"city": "Paris"}, call_id="call_abc"),
        call("weather", {"city": "Rome"}),  # servers before 0.12 send no id
    )
    fake.then(Answer(calls=calls))
    response = await model()(HI, tools=[WEATHER, TIME])
    first, second = response.tool_uses
    assert first == ToolUseBlock("call_abc", "weather", {"city": "Paris"})
    assert (second.name, second.input) == ("weather", {"city": "Rome"})
    assert second.id.startswith("call_") and second.id != first.id
    assert fake.requests[0]["tools"] == [
        {"type": "function", "function": WEATHER},
        {"type": "function", "function": TIME},
    ]


async def test_tool_choice_auto_offers_the_tools_as_they_are(fake, model):
    await model()(HI, tools=[WEATHER, TIME], tool_choice="auto")
    request = fake.requests[0]
    assert [t["function"]["name"] for t in request["tools"]] == ["weather", "time"]
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_tool_choice_none_offers_no_tools(fake, model):
    await model()(HI, tools=[WEATHER, TIME], tool_choice="none")
    assert "tools" not in fake.requests[0]


async def test_a_named_tool_choice_offers_that_tool_alone_and_asks_for_it(fake, model):
    await model()(HI, tools=[WEATHER, TIME], tool_choice="time")
    request = fake.requests[0]
    assert [t["function"]["name"] for t in request["tools"]] == ["time"]
    assert request["messages"][0] == {"role": "system", "content": f"Be brief.\n\n{REQUIRED}"}


async def test_a_required_tool_call_is_asked_for_in_a_system_prompt(fake, model):
    await model()([Msg("user", "hi", "user")], tools=[WEATHER, TIME], tool_choice="required")
    request = fake.requests[0]
    assert [t["function"]["name"] for t in request["tools"]] == ["weather", "time"]
    assert request["messages"][0] == {"role": "system", "content": REQUIRED}


async def test_required_tool_choice_without_tools_is_refused(fake, model):
    with pytest.raises(ModelRejected, match="needs at least one tool"):
        await model()(HI, tool_choice="required")
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_round_trip_goes_back_by_tool_name(fake, model, stream):
    fake.then(
        Answer(
            "Let me look.", thinking="Paris weather.", calls=(call("weather", {"city": "Paris"}),)
        )
    )
    chat = model(name="qwen3", think=True)
    first = await chat(HI, tools=[WEATHER], stream=stream)
    if stream:
        first = (await collect(first))[-1]
    (use,) = first.tool_uses
    history = [
        *HI,
        first.to_msg("qwen"),
        Msg("tool", [ToolResultBlock(use.id, "weather", "sunny")], "user"),
    ]
    assert (await chat(history, tools=[WEATHER])).text == "ok"  # the fake checks the pairing
    assert fake.requests[1]["messages"][2:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "thinking": "Paris weather.",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]


async def test_streaming_is_cumulative_with_thinking_usage_and_done_reason(fake, model):
    fake.then(Answer("Hello there, world!", thinking="The user greets me.", counts=(5, 9)))
    chunks = await collect(await model(name="qwen3", think=True)(HI, stream=True))
    request = fake.requests[0]
    assert request["stream"] is True and request["think"] is True
    texts = [c.text for c in chunks]
    assert growing(texts)
    thoughts = [b.thinking for c in chunks for b in c.content if isinstance(b, ThinkingBlock)]
    assert growing(thoughts) and thoughts[-1] == "The user greets me."
    last = chunks[-1]
    assert last.content == [ThinkingBlock("The user greets me."), TextBlock("Hello there, world!")]
    assert (last.usage.input_tokens, last.usage.output_tokens) == (5, 9)
    assert last.finish_reason == "stop"
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])


async def test_a_stream_cut_midway_through_a_line_is_retryable(fake, model):
    fake.then(Broken(Answer("Hello there, world"), after=2))
    with pytest.raises(ModelUnavailable, match="stream cut or garbled") as info:
        await collect(await model()(HI, stream=True))
    assert info.value.retryable


async def test_a_stream_that_ends_before_done_is_cut(fake, model):
    fake.then(Broken(Answer("Hello there"), after=3, midway=False))  # every line but the last
    with pytest.raises(ModelUnavailable, match="stream cut before its last object") as info:
        await collect(await model()(HI, stream=True))
    assert info.value.retryable


async def test_an_error_line_midway_is_a_retryable_model_error(fake, model):
    fake.then(Broken(Answer("Hello there"), after=2, error="model runner has unexpectedly stopped"))
    with pytest.raises(ModelUnavailable, match="model runner has unexpectedly stopped"):
        await collect(await model()(HI, stream=True))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_model_the_server_lacks_is_rejected_with_its_message(fake, model, stream):
    with pytest.raises(ModelRejected, match="model 'llama9' not found") as info:
        response = await model(name="llama9")(HI, stream=stream)
        if stream:
            await collect(response)
    assert info.value.status == 404 and not info.value.retryable


async def test_a_server_error_is_retryable_with_its_message(fake, model):
    fake.then(Failure(503, "server busy, please try again.  maximum pending requests exceeded"))
    with pytest.raises(ModelUnavailable, match="server busy") as info:
        await model()(HI)
    assert info.value.status == 503


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_is_native(fake, model, stream):
    fake.then(Answer('{"answer": 42, "why": "six times seven"}'))
    response = await model()(HI, structured=SCHEMA, stream=stream)
    if stream:
        chunks = await collect(response)
        assert growing([c.text for c in chunks])
        response = chunks[-1]
    assert json.loads(response.text) == {"answer": 42, "why": "six times seven"}
    assert fake.requests[0]["format"] == SCHEMA
    assert fake.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_thinking_can_be_turned_off(fake, model):
    await model(name="qwen3", think=False)(HI)
    assert fake.requests[0]["think"] is False


async def test_images_are_sent_inline(fake, model):
    image = ImageBlock(Base64Source("image/png", "aGVsbG8="))
    await model()([Msg("user", [TextBlock("What is it?"), image], "user")])
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": "What is it?", "images": ["aGVsbG8="]}
    ]
    assert base64.b64decode(fake.requests[0]["messages"][0]["images"][0]) == b"hello"


async def test_the_multiagent_formatter_is_an_option(fake, model):
    chat = model(formatter="ollama-multiagent")
    await chat([Msg("alice", "hi", "user"), Msg("bob", "hello", "assistant")])
    assert fake.requests[0]["messages"] == [{"role": "user", "content": "alice: hi\nbob: hello"}]


def test_capabilities_are_declared_on_the_class():
    caps = OllamaModel.capabilities
    assert caps.structured_output and caps.thinking and not caps.media_urls
    assert caps.media == frozenset({"image"})
