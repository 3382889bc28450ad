from __future__ import annotations

import json

import attrs
import pytest

from aopkit import (
    ImageBlock,
    Kernel,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from aopkit.errors import AopkitError
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY
from aopkit.testing.conformance import WEATHER, growing
from aopkit.testing.fakes.dashscope import (
    Answer,
    Broken,
    Failure,
    FakeDashScope,
    call,
    validate_request,
)
from aopkit_dashscope import MULTIMODAL_PATH, TEXT_PATH, DashScopeModel

KEY = "sk-ds-FAKE-KEY-4b8e21"
HI = [Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")]
TIME = {"name": "time", "parameters": {"type": "object", "properties": {}}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.fixture
async def fake(serve):
    server = FakeDashScope(key=KEY)
    server.base_url = await server.start(serve)
    return server


@pytest.fixture
def model(kernel, fake):
    def make(name="qwen-plus", **options):
        options = {"base_url": fake.base_url, "api_key": KEY, "retry": NO_RETRY, **options}
        return kernel.model(f"dashscope:{name}", **options)

    return make


async def collect(stream):
    return [chunk async for chunk in stream]


async def test_a_call_sends_a_generation_request_and_reads_the_answer(fake, model):
    fake.then(Answer("Hello world", usage=(21, 4)))
    response = await model()(HI)
    assert response.text == "Hello world" and response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (21, 4)
    assert response.id.startswith("fa4e0000")  # the request_id
    assert fake.paths == [TEXT_PATH]
    assert fake.requests[0] == {
        "model": "qwen-plus",
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]
        },
        "parameters": {"result_format": "message"},
    }
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert "X-DashScope-SSE" not in fake.headers[0]


async def test_key_and_base_url_from_the_kernels_environment(fake):
    environ = {"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_BASE_URL": fake.base_url + "/"}
    async with Kernel(environ=environ) as kernel:
        assert (await kernel.model("dashscope:qwen-plus", retry=NO_RETRY)(HI)).text == "ok"
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"


async def test_options_from_the_config_file(fake, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[models.dashscope]\nbase_url = "{fake.base_url}"\napi_key = "{KEY}"\n'
        '[models."dashscope:qwen-vl-plus"]\nmultimodal = true\n'
        "extra_body = { parameters = { temperature = 0.2 } }\n"
    )
    async with Kernel(environ={"AOPKIT_CONFIG": str(config)}) as kernel:
        await kernel.model("dashscope:qwen-vl-plus", retry=NO_RETRY)(HI)
    assert fake.paths == [MULTIMODAL_PATH]
    assert fake.requests[0]["parameters"] == {"result_format": "message", "temperature": 0.2}
    assert fake.requests[0]["input"]["messages"][1] == {"role": "user", "content": [{"text": "hi"}]}


async def test_parallel_tool_calls_and_tool_specs(fake, model):
    calls = (
        call("call_1", "weather", {"city": "Paris"}),
        call("call_2", "weather", {"city": "Rome"}),
    )
    fake.then(Answer(calls=calls))
    response = await model()(HI, tools=[WEATHER, TIME])
    assert response.tool_uses == [
        ToolUseBlock("call_1", "weather", {"city": "Paris"}),
        ToolUseBlock("call_2", "weather", {"city": "Rome"}),
    ]
    assert response.text == "" and response.finish_reason == "tool_calls"
    parameters = fake.requests[0]["parameters"]
    assert parameters["tools"] == [
        {"type": "function", "function": {**WEATHER}},
        {"type": "function", "function": {"name": "time", "parameters": TIME["parameters"]}},
    ]
    assert parameters["parallel_tool_calls"] is True and "tool_choice" not in parameters


async def test_one_tool_call_at_a_time_when_capabilities_say_so(fake, model):
    capabilities = attrs.evolve(DashScopeModel.capabilities, parallel_tool_calls=False)
    await model(capabilities=capabilities)(HI, tools=[WEATHER])
    assert fake.requests[0]["parameters"]["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("time", {"type": "function", "function": {"name": "time"}}),
    ],
)
async def test_tool_choice(fake, model, choice, wire):
    await model()(HI, tools=[WEATHER, TIME], tool_choice=choice)
    assert fake.requests[0]["parameters"]["tool_choice"] == wire


async def test_required_with_one_tool_forces_that_tool(fake, model):
    await model()(HI, tools=[WEATHER], tool_choice="required")
    assert fake.requests[0]["parameters"]["tool_choice"] == {
        "type": "function",
        "function": {"name": "weather"},
    }
    assert fake.requests[0]["input"]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_required_with_several_tools_is_asked_for_in_the_system_prompt(fake, model):
    """DashScope can force one named tool, not "any of them": the model is told instead."""
    await model()([Msg("user", "hi", "user")], tools=[WEATHER, TIME], tool_choice="required")
    request = fake.requests[0]
    assert request["parameters"]["tool_choice"] == "auto"
    system = request["input"]["messages"][0]
    assert (
        system["role"] == "system"
        and "must answer by calling one of the tools" in system["content"]
    )


async def test_required_tool_choice_without_tools_is_refused(fake, model):
    with pytest.raises(ModelRejected, match="needs at least one tool"):
        await model()(HI, tool_choice="required")
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_round_trip_is_accepted_by_the_api(fake, model, stream):
    fake.then(Answer("Let me look.", calls=(call("call_1", "weather", {"city": "Paris"}),)))
    chat = model()
    first = await chat(HI, tools=[WEATHER], stream=stream)
    if stream:
        first = (await collect(first))[-1]
    history = [
        *HI,
        first.to_msg("qwen"),
        Msg("tool", [ToolResultBlock("call_1", "weather", "sunny")], "user"),
    ]
    assert (await chat(history, tools=[WEATHER])).text == "ok"  # the fake checks the pairing
    assert fake.requests[1]["input"]["messages"][2:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


async def test_streaming_is_cumulative_with_thinking_usage_and_finish_reason(fake, model):
    fake.then(Answer("Hello there, world!", reasoning="The user greets me.", usage=(5, 9)))
    chunks = await collect(await model()(HI, stream=True))
    assert fake.headers[0]["X-DashScope-SSE"] == "enable"
    assert fake.requests[0]["parameters"]["incremental_output"] is True
    texts = [c.text for c in chunks]
    assert growing(texts)
    thoughts = [b.thinking for c in chunks for b in c.content if isinstance(b, ThinkingBlock)]
    assert growing(thoughts) and thoughts[-1] == "The user greets me."
    last = chunks[-1]
    assert last.content == [ThinkingBlock("The user greets me."), TextBlock("Hello there, world!")]
    assert (last.usage.input_tokens, last.usage.output_tokens) == (5, 9)
    assert last.finish_reason == "stop" and last.id.startswith("fa4e0000")
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])


async def test_streamed_tool_arguments_are_assembled_from_fragments(fake, model):
    args = {"city": "Saint-Rémy-de-Provence", "days": [1, 2, 3]}
    garbled = '{"city": "Rome", '
    fake.then(Answer(calls=(call("call_1", "weather", args), call("call_2", "weather", garbled))))
    chunks = await collect(await model()(HI, tools=[WEATHER], stream=True))
    assert chunks[-1].tool_uses == [
        ToolUseBlock("call_1", "weather", args),
        ToolUseBlock("call_2", "weather", {}, raw_input=garbled),  # kept verbatim, not guessed
    ]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_a_stream_without_blank_lines_between_events_is_read_too(serve, kernel):
    fake = FakeDashScope(Answer("Hello there, world!"), blank_lines=False)
    base_url = await fake.start(serve)
    chat = kernel.model("dashscope:qwen-plus", base_url=base_url, retry=NO_RETRY)
    chunks = await collect(await chat(HI, stream=True))
    assert growing([c.text for c in chunks]) and chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("after", [3, 0])
async def test_a_stream_cut_midway_through_an_event_is_retryable(fake, model, after):
    fake.then(Broken(Answer("Hello there, world"), after=after))
    with pytest.raises(ModelUnavailable, match="stream cut mid-event") as info:
        await collect(await model()(HI, stream=True))
    assert info.value.retryable


async def test_a_stream_that_ends_without_a_finish_reason_is_cut(fake, model):
    answer = Answer("Hello there")  # three text frames, then the one with finish_reason
    fake.then(Broken(answer, after=3, midway=False))
    with pytest.raises(ModelUnavailable, match="stream cut before its last event") as info:
        await collect(await model()(HI, stream=True))
    assert info.value.retryable


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(429, "Throttling.RateQuota", ModelUnavailable), (400, "DataInspectionFailed", ModelRejected)],
)
async def test_error_events_midway_are_model_errors(fake, model, status, code, error):
    fake.then(Broken(Answer("Hello there"), after=2, code=code, status=status, message="it broke"))
    with pytest.raises(error, match=f"{code}: it broke") as info:
        await collect(await model()(HI, stream=True))
    assert info.value.status == status


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limits_are_retryable_with_dashscopes_code_and_message(fake, model, stream):
    message = "Requests rate limit exceeded, please try again later."
    fake.then(Failure(429, "Throttling.RateQuota", message, {"Retry-After": "3"}))
    with pytest.raises(ModelUnavailable) as info:
        response = await model()(HI, stream=stream)
        if stream:
            await collect(response)
    assert info.value.status == 429 and info.value.retry_after == 3.0
    assert info.value.message == f"Throttling.RateQuota: {message}"


@pytest.mark.parametrize("stream", [False, True])
async def test_bad_requests_are_rejected_with_the_services_message(fake, model, stream):
    fake.then(Failure(404, "ModelNotFound", "Model not exist."))
    with pytest.raises(ModelRejected, match=r"ModelNotFound: Model not exist\.") as info:
        response = await model(name="qwen-nope")(HI, stream=stream)
        if stream:
            await collect(response)
    assert info.value.status == 404 and not info.value.retryable


async def test_a_wrong_key_is_rejected(fake, model):
    with pytest.raises(ModelRejected, match="InvalidApiKey"):
        await model(api_key="sk-wrong")(HI)


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_uses_json_mode_with_the_schema_in_the_prompt(fake, model, stream):
    fake.then(Answer('{"answer": 42, "why": "six times seven"}'))
    response = await model()(HI, structured=SCHEMA, stream=stream)
    if stream:
        chunks = await collect(response)
        assert growing([c.text for c in chunks])
        response = chunks[-1]
    assert json.loads(response.text) == {"answer": 42, "why": "six times seven"}
    request = fake.requests[0]
    assert request["parameters"]["response_format"] == {"type": "json_object"}
    system = request["input"]["messages"][0]["content"]
    assert system.startswith("Be brief.\n\nAnswer with one JSON object")
    assert json.dumps(SCHEMA) in system


def test_the_fake_refuses_json_mode_without_the_word_json_as_dashscope_does():
    """So the structured-output tests above show the instruction satisfies the rule."""
    body = {
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "parameters": {"result_format": "message", "response_format": {"type": "json_object"}},
    }
    with pytest.raises(AssertionError, match="must contain the word 'json'"):
        validate_request(body, multimodal=False, sse=False)


async def test_structured_output_with_a_strict_json_schema(fake, model):
    fake.then(Answer('{"answer": 42}'))
    response = await model(structured_mode="json_schema")(HI, structured=SCHEMA)
    assert json.loads(response.text) == {"answer": 42}
    request = fake.requests[0]
    assert request["parameters"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert request["input"]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_an_unknown_structured_mode_is_refused(kernel):
    with pytest.raises(AopkitError, match="structured_mode must be"):
        kernel.model("dashscope:qwen-plus", api_key=KEY, structured_mode="xml")


async def test_reasoning_content_becomes_a_thinking_block(fake, model):
    fake.then(Answer("Paris.", reasoning="The capital of France..."))
    response = await model()(HI)
    assert response.content == [ThinkingBlock("The capital of France..."), TextBlock("Paris.")]


@pytest.mark.parametrize("stream", [False, True])
async def test_multimodal_models_use_the_multimodal_endpoint(fake, model, stream):
    fake.then(Answer("A dog on a beach."))
    image = ImageBlock(URLSource("https://img.test/dog.jpeg"))
    messages = [Msg("user", [image, TextBlock("Where is this?")], "user")]
    response = await model(name="qwen-vl-plus", multimodal=True)(messages, stream=stream)
    if stream:
        chunks = await collect(response)
        assert growing([c.text for c in chunks])
        response = chunks[-1]
    assert response.text == "A dog on a beach."
    assert fake.paths == [MULTIMODAL_PATH]
    assert fake.requests[0]["input"]["messages"] == [
        {
            "role": "user",
            "content": [{"image": "https://img.test/dog.jpeg"}, {"text": "Where is this?"}],
        }
    ]


async def test_the_multiagent_formatter_is_an_option(fake, model):
    chat = model(formatter="dashscope-multiagent")
    await chat([Msg("alice", "hi", "user"), Msg("bob", "hello", "assistant")])
    assert fake.requests[0]["input"]["messages"] == [
        {"role": "user", "content": "alice: hi\nbob: hello"}
    ]


async def test_instructions_join_a_multimodal_system_message(fake, model):
    fake.then(Answer('{"answer": 1}'))
    await model(name="qwen-vl-plus", multimodal=True)(HI, structured=SCHEMA)
    system = fake.requests[0]["input"]["messages"][0]
    [part] = system["content"]  # the multimodal form: a list of parts
    assert part["text"].startswith("Be brief.\n\nAnswer with one JSON object")


@pytest.mark.parametrize(
    "body",
    [{"output": [1]}, {"output": "text"}, {"output": {"choices": {"a": 1}}}, {"output": None}],
)
async def test_an_answer_of_the_wrong_shape_is_a_retryable_error_not_a_crash(kernel, serve, body):
    from aiohttp import web

    async def handler(request):
        return web.json_response(body)

    app = web.Application()
    app.router.add_post(TEXT_PATH, handler)
    base = await serve(app)
    model = kernel.model("dashscope:qwen-plus", base_url=base, api_key=KEY, retry=NO_RETRY)
    with pytest.raises(ModelUnavailable, match="unexpected answer"):
        await model(HI)
