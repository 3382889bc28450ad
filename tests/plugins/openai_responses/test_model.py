from __future__ import annotations

import json

import pytest
from aiohttp import web

from aopkit import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from aopkit.faults import hit_token_limit
from aopkit.models import Capabilities, ModelError, ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY, RetryPolicy
from aopkit.testing.fakes.openai_responses import (
    Broken,
    Failure,
    FakeResponses,
    function_call,
    message,
    reasoning,
    response,
)
from aopkit_openai import DEFAULT_BASE_URL, OpenAIResponsesModel

KEY = "sk-proj-FAKE-RESPONSES-KEY-77a1"
HI = [Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")]
WEATHER = {
    "name": "weather",
    "description": "Weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, max_wait=0.05, jitter=0.0)


@pytest.fixture
async def fake(serve):
    server = FakeResponses(key=KEY)
    await server.start(serve)
    return server


@pytest.fixture
def model(kernel, fake):
    def make(**options):
        options = {"base_url": fake.base_url, "api_key": KEY, "retry": NO_RETRY, **options}
        return kernel.model("openai-responses:gpt-test", **options)

    return make


async def collect(stream):
    return [chunk async for chunk in stream]


async def test_a_call_sends_instructions_input_and_no_storage(fake, model):
    await model()(HI)
    (sent,) = fake.requests
    assert sent["model"] == "gpt-test"
    assert sent["instructions"] == "Be brief."
    assert sent["input"] == [{"role": "user", "content": "hi"}]
    assert sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_the_default_endpoint_and_capabilities(kernel):
    model = kernel.model("openai-responses:gpt-5-mini", api_key="k")
    assert isinstance(model, OpenAIResponsesModel)
    assert model.base_url == DEFAULT_BASE_URL
    caps = model.capabilities
    assert caps.structured_output and caps.thinking and caps.media == {"image"}


async def test_store_true_asks_for_no_encrypted_reasoning(fake, model):
    await model(store=True)(HI)
    assert fake.requests[0]["store"] is True and "include" not in fake.requests[0]


async def test_a_model_declared_without_thinking_asks_for_no_encrypted_reasoning(fake, model):
    await model(capabilities=Capabilities(thinking=False))(HI)
    assert "include" not in fake.requests[0]


async def test_tools_and_a_named_tool_choice_go_as_the_api_names_them(fake, model):
    await model()(HI, tools=[WEATHER], tool_choice="weather")
    sent = fake.requests[0]
    assert sent["tools"] == [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather in a city.",
            "parameters": WEATHER["parameters"],
            "strict": False,
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "name": "weather"}
    assert "parallel_tool_calls" not in sent


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
async def test_tool_choice_modes(fake, model, choice):
    await model()(HI, tools=[WEATHER], tool_choice=choice)
    assert fake.requests[0]["tool_choice"] == choice


async def test_one_call_at_a_time_when_capabilities_say_so(fake, model):
    await model(capabilities=Capabilities(parallel_tool_calls=False))(HI, tools=[WEATHER])
    assert fake.requests[0]["parallel_tool_calls"] is False


async def test_required_tool_choice_without_tools_is_refused(fake, model):
    with pytest.raises(ModelRejected, match="at least one tool"):
        await model()(HI, tool_choice="required")
    assert fake.requests == []


async def test_arguments_that_are_not_a_json_object_are_kept_verbatim(fake, model):
    fake.then(response(function_call("call_a", "weather", "{'city': Rome")))
    (use,) = (await model()(HI, tools=[WEATHER])).tool_uses
    assert use.input == {} and use.raw_input == "{'city': Rome"


async def test_structured_output_goes_through_text_format(fake, model):
    fake.then(response('{"answer": 42}'))
    answer = await model()(HI, structured=SCHEMA)
    assert answer.text == '{"answer": 42}'
    fmt = fake.requests[0]["text"]["format"]
    assert fmt == {"type": "json_schema", "name": "response", "schema": SCHEMA}


async def test_strict_structured_output_through_extra_body(fake, model):
    await model(extra_body={"text": {"format": {"strict": True}}})(HI, structured=SCHEMA)
    assert fake.requests[0]["text"]["format"]["strict"] is True
    assert fake.requests[0]["text"]["format"]["schema"] == SCHEMA


async def test_reasoning_is_kept_and_sent_back_unchanged_with_its_items_ids(fake, model):
    thought = reasoning("Rome is likely.", "Check the weather.", encrypted="gAAAA-secret-1")
    call = function_call("call_a", "weather", {"city": "Rome"})
    fake.then(response(thought, call), response("Sunny in Rome."))
    first = await model()(HI, tools=[WEATHER])
    think, use = first.content
    assert isinstance(think, ThinkingBlock)
    assert think.thinking == "Rome is likely.\n\nCheck the weather."
    assert think.extra["reasoning_item"] == thought
    history = [
        *HI,
        first.to_msg("bot"),
        Msg("tools", [ToolResultBlock(use.id, "weather", "sunny")], "user"),
    ]
    second = await model()(history, tools=[WEATHER])
    assert second.text == "Sunny in Rome."
    sent = fake.requests[1]["input"]
    assert sent[1] == thought  # encrypted_content and all, as it came
    assert sent[2] == {
        "type": "function_call",
        "id": call["id"],  # paired with its reasoning
        "call_id": "call_a",
        "name": "weather",
        "arguments": '{"city": "Rome"}',
    }
    assert sent[3] == {"type": "function_call_output", "call_id": "call_a", "output": "sunny"}


async def test_reasoning_without_encrypted_content_is_left_out_when_nothing_is_stored(fake, model):
    fake.then(response(reasoning("hmm", encrypted=None), function_call("c1", "weather", {})))
    first = await model()(HI, tools=[WEATHER])
    history = [*HI, first.to_msg("bot"), Msg("t", [ToolResultBlock("c1", "weather", "x")], "user")]
    await model()(history, tools=[WEATHER])
    sent = fake.requests[1]["input"]
    assert [i.get("type") for i in sent] == [None, "function_call", "function_call_output"]
    assert "id" not in sent[1], "no fc_ id without its reasoning item"
    await model(store=True)(history, tools=[WEATHER])  # stored: the server finds it by id
    assert fake.requests[2]["input"][1]["type"] == "reasoning"


async def test_a_history_from_another_provider_is_valid(fake, model):
    history = [
        *HI,
        Msg(
            "bot",
            [
                ThinkingBlock("let me see", extra={"signature": "anthropic-sig"}),
                TextBlock("Checking."),
                ToolUseBlock("toolu_1", "weather", {"city": "Rome"}),
            ],
            "assistant",
        ),
        Msg("tools", [ToolResultBlock("toolu_1", "weather", "rain", is_error=True)], "user"),
    ]
    answer = await model()(history, tools=[WEATHER])
    assert answer.text == "ok"  # the fake server checked the request against the official types
    assert fake.requests[0]["input"][1:] == [
        {"role": "assistant", "content": "Checking."},
        {
            "type": "function_call",
            "call_id": "toolu_1",
            "name": "weather",
            "arguments": '{"city": "Rome"}',
        },
        {"type": "function_call_output", "call_id": "toolu_1", "output": "Error: rain"},
    ]


async def test_a_refusal_is_text_marked_as_such(fake, model):
    fake.then(response(message("", refusal="I can't help with that.")))
    (block,) = (await model()(HI)).content
    assert block.text == "I can't help with that." and block.extra["refusal"] is True


async def test_an_incomplete_answer_is_a_cut_off(fake, model):
    fake.then(response("The answer is 12", incomplete="max_output_tokens"))
    answer = await model()(HI)
    assert answer.text == "The answer is 12"
    assert answer.finish_reason == "max_output_tokens" and hit_token_limit(answer.finish_reason)


async def test_a_streamed_reasoning_item_is_kept_whole_with_its_encrypted_content(fake, model):
    thought = reasoning("Thinking it over.", encrypted="gAAAA-secret-2")
    fake.then(response(thought, "Hello there, how are you?"))
    chunks = await collect(await model()(HI, stream=True))
    # the item is complete only in output_item.done: what streams before is its summary
    assert chunks[-1].content[0].extra["reasoning_item"] == thought
    assert fake.requests[0]["stream"] is True


async def test_argument_fragments_make_no_chunk_of_their_own(fake, model):
    """A chunk is sent when a call is whole, not once per fragment of its arguments."""
    fake.then(
        response(
            function_call("call_a", "weather", {"city": "Rome, Lazio, Italy"}),
            function_call("call_b", "weather", {"city": "Oslo"}),
        )
    )
    chunks = await collect(await model()(HI, tools=[WEATHER], stream=True))
    assert [len(c.tool_uses) for c in chunks[:-1]] == [1, 2]


async def test_a_streamed_incomplete_answer_is_a_cut_off(fake, model):
    fake.then(response("Partial", incomplete="max_output_tokens"))
    last = (await collect(await model()(HI, stream=True)))[-1]
    assert last.text == "Partial" and hit_token_limit(last.finish_reason)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("server_error", ModelUnavailable),
        ("rate_limit_exceeded", ModelUnavailable),
        ("invalid_prompt", ModelRejected),
        (None, ModelUnavailable),
    ],
)
async def test_an_error_event_is_mapped(fake, model, code, error):
    fake.then(Broken(response("x"), after=3, how="error", code=code))
    with pytest.raises(error, match="The server had an error"):
        await collect(await model()(HI, stream=True))


@pytest.mark.parametrize(
    ("code", "error"),
    [("server_error", ModelUnavailable), ("invalid_image", ModelRejected)],
)
async def test_a_failed_response_is_mapped(fake, model, code, error):
    fake.then(Broken(response("x"), after=2, how="failed", code=code))
    with pytest.raises(error, match=f"Failed: {code}"):
        await collect(await model()(HI, stream=True))
    fake.then(response(status="failed", error={"code": code, "message": f"Failed: {code}."}))
    with pytest.raises(error, match=f"Failed: {code}"):
        await model()(HI)


async def test_a_failure_echoing_the_key_does_not_show_it(fake, model):
    """The suite checks HTTP errors; a failed response and a stream's failure are the
    Responses API's own ways to fail, with the API's message."""
    echo = f"Key {KEY} may not ask that."
    fake.then(
        response(status="failed", error={"code": "invalid_prompt", "message": echo}),
        Broken(response("x"), 2, "failed", "invalid_prompt", echo),
        Broken(response("x"), 2, "error", "invalid_prompt", echo),
    )
    for stream in (False, True, True):
        with pytest.raises(ModelRejected, match="may not ask that") as caught:
            await collect(await model()(HI, stream=True)) if stream else await model()(HI)
        assert KEY not in str(caught.value) and KEY not in caught.value.message


async def test_a_rate_limit_waits_as_its_retry_after_ms_says(fake, model):
    fake.then(Failure(429, "busy", type="requests", headers={"retry-after-ms": "1500"}))
    with pytest.raises(ModelUnavailable, match="busy") as caught:
        await model()(HI)
    assert caught.value.retry_after == 1.5


async def test_unknown_output_items_are_kept_and_sent_back_as_they_came(fake, model):
    search = {
        "id": "fs_1",
        "type": "file_search_call",
        "status": "completed",
        "queries": ["weather Rome"],
    }
    fake.then(response(search, "Sunny."))
    first = await model()(HI)
    assert first.content[0].type == "file_search_call" and first.text == "Sunny."
    await model()([*HI, first.to_msg("bot"), Msg("user", "thanks", "user")])
    assert fake.requests[1]["input"][1] == search


def _sse(*events):
    return "".join(
        f"event: x\ndata: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events
    )


HOSTILE_STREAMS = {
    "nulls everywhere": _sse(
        {"type": "response.created", "response": None},
        {"type": "response.output_item.added", "output_index": 0, "item": None},
        {
            "type": "response.output_text.delta",
            "output_index": 0,
            "content_index": None,
            "delta": None,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": None},
        {"type": "response.completed", "response": None},
    ),
    "wrong types": _sse(
        {"type": "response.output_item.added", "output_index": "0", "item": []},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "message", "content": 5},
        },
        {"type": "response.output_text.delta", "output_index": 0, "content_index": -1, "delta": 7},
        {"type": "response.output_item.done", "output_index": 1, "item": {"type": 3}},
        {"type": "response.completed", "response": {"output": "nope", "usage": "lots", "id": 5}},
    ),
    "not objects": _sse("[1, 2]"),
    "items whose parts are not objects": _sse(
        {"type": "response.output_item.added", "output_index": 0, "item": {"content": [5]}},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "x"},
        {"type": "response.output_item.added", "output_index": 1, "item": {"summary": [{}]}},
        {"type": "response.reasoning_summary_text.delta", "output_index": 1, "delta": "y"},
        {"type": "response.output_item.added", "output_index": 2, "item": {"arguments": 5}},
        {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{"},
        {"type": "response.completed", "response": {"output": []}},
    ),
    "types that are not text": _sse(
        {"type": ["response.completed"]},
        {"type": {"a": 1}, "output_index": 0, "delta": "x"},
        {"type": "response.completed", "response": {"output": []}},
    ),
    "an error event of nulls": _sse({"type": "error", "code": None, "message": None}),
    "a failed response of nulls": _sse({"type": "response.failed", "response": {"error": 5}}),
    "half a stream": 'event: response.created\ndata: {"type": "resp',
    "an HTML page": "<html><body>Bad gateway</body></html>",
}


@pytest.mark.parametrize("body", HOSTILE_STREAMS.values(), ids=HOSTILE_STREAMS.keys())
async def test_a_hostile_stream_is_an_answer_or_a_model_error(kernel, serve, body):
    async def handler(request):
        return web.Response(text=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/responses", handler)
    base = await serve(app)
    model = kernel.model("openai-responses:m", base_url=base + "/v1", retry=NO_RETRY)
    try:
        chunks = await collect(await model(HI, stream=True))
    except ModelError:
        return
    assert isinstance(chunks[-1].text, str)


@pytest.mark.parametrize(
    "body",
    [_sse("[1, 2]"), _sse("null"), _sse('{"type": "response.output_text.delta", "del')],
    ids=["a list", "null", "an event cut midway"],
)
async def test_a_garbled_stream_event_is_retried(kernel, serve, body):
    """A stream event that is not a JSON object is the transport's fault, not the request's:
    the call is tried again (here it stays garbled, so the last try fails)."""
    tries = []

    async def handler(request):
        tries.append(request)
        return web.Response(text=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/responses", handler)
    base = await serve(app)
    model = kernel.model("openai-responses:m", base_url=base + "/v1", retry=FAST_RETRY)
    with pytest.raises(ModelUnavailable, match="stream cut or garbled"):
        await collect(await model(HI, stream=True))
    assert len(tries) == FAST_RETRY.attempts


@pytest.mark.parametrize(
    "body",
    [
        {"output": [None, 5, {"type": None}, {"type": "message", "content": "x"}], "usage": None},
        {"output": [{"type": "function_call", "call_id": 1, "name": None, "arguments": 5}]},
        {"output": "text", "status": "failed", "error": "boom"},
        {"status": "failed", "output": [], "error": None},
        [1, 2, 3],
    ],
)
async def test_a_hostile_answer_is_an_answer_or_a_model_error(kernel, serve, body):
    async def handler(request):
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/v1/responses", handler)
    base = await serve(app)
    model = kernel.model("openai-responses:m", base_url=base + "/v1", retry=NO_RETRY)
    try:
        answer = await model(HI)
    except ModelError:
        return
    assert isinstance(answer.text, str)


async def test_a_structured_answer_cut_at_max_output_tokens_is_asked_again(fake, model, kernel):
    """Tier 3, not a repair: what a cut-off answer would have said cannot be known."""
    import attrs

    from aopkit import ModelAgent

    @attrs.frozen
    class Verdict:
        winner: str
        score: int

    fake.then(
        response('{"winner": "alice", "score": 1', incomplete="max_output_tokens"),
        response('{"winner": "alice", "score": 12}'),
    )
    agent = ModelAgent("judge", model(), kernel=kernel)
    assert await agent(HI[1], structured=Verdict) == Verdict("alice", 12)
    assert len(fake.requests) == 2
    [fault] = kernel.faults.faults
    assert fault.tier == 3 and "max_output_tokens" in fault.detail
