import json
import re

import pytest

from aopkit import Kernel, Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY
from aopkit.testing.fakes.gemini import (
    INTERNAL,
    OVERLOADED,
    QUOTA,
    FakeGemini,
    Reply,
    chunk,
    error_body,
)
from aopkit_gemini import DEFAULT_BASE_URL, GeminiModel

HI = [Msg("user", "hi", "user")]
KEY = "AIza-TEST-DO-NOT-LEAK-42"
WEATHER = {
    "name": "weather",
    "description": "Current weather in a city.",
    "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "$defs": {"Unit": {"enum": ["C", "F"], "type": "string"}},
        "properties": {
            "city": {"type": "string", "title": "City"},
            "unit": {"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}], "default": None},
        },
        "required": ["city"],
    },
}


@pytest.fixture
async def gemini(serve):
    fake = FakeGemini(key=KEY)
    await fake.start(serve)
    return fake


@pytest.fixture
def model(kernel, gemini):
    return kernel.model("gemini:gemini-test", base_url=gemini.base_url, api_key=KEY, retry=NO_RETRY)


async def test_registered_under_its_prefix_with_both_formatters(kernel):
    assert kernel.models["gemini"] is GeminiModel
    assert kernel.formatters["gemini"].name == "gemini"
    assert kernel.formatters["gemini-multiagent"].multi_agent
    model = kernel.model("gemini:gemini-test")
    assert model.base_url == DEFAULT_BASE_URL and model.api_key is None


async def test_a_call_posts_to_generate_content_with_the_key_in_a_header_only(model, gemini):
    gemini.answer_with(
        chunk(
            {"text": "Hello!"},
            finish="STOP",
            usage={"prompt": 3, "output": 2, "thoughts": 5},
            response_id="r-9",
        )
    )
    response = await model(HI)
    assert response.text == "Hello!"
    assert response.finish_reason == "stop" and response.id == "r-9"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (3, 7)
    assert gemini.paths[0] == "/v1beta/models/gemini-test:generateContent"
    assert gemini.headers[0]["x-goog-api-key"] == KEY
    assert gemini.queries[0] == {} and "Authorization" not in gemini.headers[0]
    assert gemini.requests[0] == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def test_key_and_base_url_from_the_kernels_environment(gemini, tmp_path):
    kernel = Kernel(
        environ={
            "GEMINI_API_KEY": KEY,
            "GEMINI_BASE_URL": gemini.base_url,
            "AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl"),
        }
    )
    try:
        gemini.answer_with(chunk({"text": "ok"}, finish="STOP"))
        assert (await kernel.model("gemini:models/gemini-test")(HI)).text == "ok"
        assert gemini.paths[0] == "/v1beta/models/gemini-test:generateContent"
    finally:
        await kernel.aclose()


async def test_tools_are_declared_with_clean_schemas(model, gemini):
    gemini.answer_with(chunk({"text": "ok"}, finish="STOP"))
    await model(HI, tools=[WEATHER, {"name": "now", "description": "The time."}])
    declarations = gemini.last["tools"][0]["functionDeclarations"]
    assert declarations == [
        {
            "name": "weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "OBJECT",
                "properties": {
                    "city": {"type": "STRING"},
                    "unit": {"type": "STRING", "enum": ["C", "F"], "nullable": True},
                },
                "required": ["city"],
            },
        },
        {"name": "now", "description": "The time."},  # no parameters: Gemini rejects {}
    ]
    assert "toolConfig" not in gemini.last


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("weather", {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
    ],
)
async def test_tool_choice(model, gemini, choice, config):
    gemini.answer_with(chunk({"text": "ok"}, finish="STOP"))
    await model(HI, tools=[WEATHER], tool_choice=choice)
    assert gemini.last["toolConfig"] == {"functionCallingConfig": config}


async def test_a_schema_that_cannot_be_inlined_is_rejected_before_any_request(model, gemini):
    bad = {
        "name": "t",
        "parameters": {"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}},
    }
    with pytest.raises(ModelRejected, match=r"tool 't'.*points at nothing"):
        await model(HI, tools=[bad])
    assert gemini.requests == []


async def test_parallel_calls_round_trip_with_gemini_ids_and_signatures(model, gemini):
    gemini.answer_with(
        chunk(
            {
                "functionCall": {"id": "fc-1", "name": "weather", "args": {"city": "Paris"}},
                "thoughtSignature": "sig-A",
            },
            {"functionCall": {"id": "fc-2", "name": "weather", "args": {"city": "Rome"}}},
            finish="STOP",
        )
    )
    response = await model(HI, tools=[WEATHER])
    assert response.finish_reason == "tool_use"
    assert response.tool_uses == [
        ToolUseBlock("fc-1", "weather", {"city": "Paris"}, extra={"thoughtSignature": "sig-A"}),
        ToolUseBlock("fc-2", "weather", {"city": "Rome"}),
    ]
    history = [
        *HI,
        response.to_msg("bot"),
        Msg(
            "tool",
            [ToolResultBlock("fc-2", "weather", "18C"), ToolResultBlock("fc-1", "weather", "12C")],
            "user",
        ),
    ]
    gemini.answer_with(chunk({"text": "Paris 12C, Rome 18C"}, finish="STOP"))
    assert (await model(history, tools=[WEATHER])).text == "Paris 12C, Rome 18C"
    model_turn, answers = gemini.last["contents"][1:]
    assert model_turn["parts"][0] == {
        "functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "fc-1"},
        "thoughtSignature": "sig-A",
    }
    assert [p["functionResponse"] for p in answers["parts"]] == [
        {"name": "weather", "response": {"output": "12C"}, "id": "fc-1"},
        {"name": "weather", "response": {"output": "18C"}, "id": "fc-2"},
    ]


async def test_calls_without_ids_get_stable_ids_that_pair_their_results(model, gemini):
    gemini.stream(
        chunk({"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}),
        chunk({"functionCall": {"name": "weather", "args": {"city": "Lima"}}}, finish="STOP"),
    )
    chunks = [r async for r in await model(HI, tools=[WEATHER], stream=True)]
    first_id = chunks[0].tool_uses[0].id
    final = chunks[-1]
    assert final.tool_uses[0].id == first_id  # the same id in every chunk
    assert len({c.id for c in final.tool_uses}) == 2
    results = [ToolResultBlock(c.id, c.name, c.input["city"]) for c in final.tool_uses]
    gemini.answer_with(chunk({"text": "done"}, finish="STOP"))
    await model([*HI, final.to_msg("bot"), Msg("tool", results[::-1], "user")])
    calls, answers = gemini.last["contents"][1:]
    assert [p["functionCall"] for p in calls["parts"]] == [
        {"name": "weather", "args": {"city": "Oslo"}},
        {"name": "weather", "args": {"city": "Lima"}},
    ]
    assert [p["functionResponse"] for p in answers["parts"]] == [
        {"name": "weather", "response": {"output": "Oslo"}},
        {"name": "weather", "response": {"output": "Lima"}},
    ]


async def test_thoughts_become_thinking_blocks_and_signatures_come_back(model, gemini):
    gemini.answer_with(
        chunk(
            {"text": "Let me think.", "thought": True},
            {"text": "The answer is 4.", "thoughtSignature": "sig-T"},
            finish="STOP",
            usage={"prompt": 1, "output": 4, "thoughts": 9},
        )
    )
    response = await model(HI)
    assert response.content == [
        ThinkingBlock("Let me think."),
        TextBlock("The answer is 4.", extra={"thoughtSignature": "sig-T"}),
    ]
    assert response.text == "The answer is 4." and response.usage.output_tokens == 13
    gemini.answer_with(chunk({"text": "ok"}, finish="STOP"))
    await model([*HI, response.to_msg("bot"), Msg("user", "why?", "user")])
    assert gemini.last["contents"][1]["parts"] == [
        {"text": "Let me think.", "thought": True},
        {"text": "The answer is 4.", "thoughtSignature": "sig-T"},
    ]


async def test_structured_output_is_native_and_the_text_is_the_json(kernel, gemini):
    model = kernel.model(
        "gemini:gemini-test",
        base_url=gemini.base_url,
        api_key=KEY,
        generation_config={"temperature": 0.2},
        extra_body={"generationConfig": {"maxOutputTokens": 64}},
    )
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
        "required": ["n"],
    }
    gemini.answer_with(chunk({"text": '{"n": 3}'}, finish="STOP"))
    response = await model(HI, structured=schema)
    assert json.loads(response.text) == {"n": 3}
    assert gemini.last["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.2,
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"n": {"type": "INTEGER", "minimum": 1}},
            "required": ["n"],
        },
    }


async def test_streaming_is_cumulative_and_the_last_chunk_has_usage(model, gemini):
    gemini.stream(
        chunk({"text": "Thinking", "thought": True}),
        chunk({"text": " hard", "thought": True}),
        chunk({"text": "Hel"}),
        chunk({"text": "lo"}, usage={"prompt": 4, "output": 1}),
        chunk(
            {"text": "!"},
            {"text": "", "thoughtSignature": "sig-end"},
            finish="STOP",
            usage={"prompt": 4, "output": 3, "thoughts": 2},
        ),
    )
    chunks = [r async for r in await model(HI, stream=True)]
    assert [c.text for c in chunks] == ["", "", "Hel", "Hello", "Hello!"]
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.content == [
        ThinkingBlock("Thinking hard"),
        TextBlock("Hello!", extra={"thoughtSignature": "sig-end"}),
    ]
    assert final.finish_reason == "stop" and final.id == "resp-1"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 5)
    assert gemini.paths[0].endswith(":streamGenerateContent")
    assert gemini.queries[0] == {"alt": "sse"}


async def test_text_after_a_signed_part_starts_a_new_block(model, gemini):
    gemini.answer_with(
        chunk({"text": "one", "thoughtSignature": "s1"}, {"text": "two"}, finish="STOP")
    )
    response = await model(HI)
    assert response.content == [
        TextBlock("one", extra={"thoughtSignature": "s1"}),
        TextBlock("two"),
    ]


async def test_a_stream_without_a_finish_reason_is_cut_and_retryable(model, gemini):
    gemini.stream(chunk({"text": "Hel"}), chunk({"text": "lo"}))
    seen = []
    with pytest.raises(ModelUnavailable, match="stream cut"):
        async for r in await model(HI, stream=True):
            seen.append(r.text)
    assert seen == ["Hel", "Hello"]


async def test_an_error_event_inside_a_stream_is_raised(model, gemini):
    gemini.stream(chunk({"text": "Hel"}), OVERLOADED)
    with pytest.raises(ModelUnavailable, match="UNAVAILABLE: The model is overloaded") as info:
        [r async for r in await model(HI, stream=True)]
    assert info.value.status == 503


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        (QUOTA, 429, ModelUnavailable, "RESOURCE_EXHAUSTED: You exceeded your current quota"),
        (OVERLOADED, 503, ModelUnavailable, "UNAVAILABLE: The model is overloaded"),
        (INTERNAL, 500, ModelUnavailable, "INTERNAL: An internal error"),
        (
            error_body(400, "INVALID_ARGUMENT", "* contents: must not be empty"),
            400,
            ModelRejected,
            "INVALID_ARGUMENT: * contents: must not be empty",
        ),
        (
            error_body(404, "NOT_FOUND", "models/nope is not found for API version v1beta"),
            404,
            ModelRejected,
            "NOT_FOUND: models/nope is not found",
        ),
    ],
)
async def test_google_error_bodies_map_onto_the_kernel_errors(
    model, gemini, body, status, kind, message
):
    gemini.answer_with(
        Reply(body, status=status, headers={"Retry-After": "3"} if status == 429 else {})
    )
    with pytest.raises(kind, match=re.escape(message)) as info:
        await model(HI)
    assert info.value.status == status
    if status == 429:
        assert info.value.retry_after == 3.0


async def test_the_wait_google_asks_for_in_the_body_is_honoured(model, gemini):
    gemini.answer_with(Reply(QUOTA, status=429))  # Google sends RetryInfo, not a Retry-After header
    with pytest.raises(ModelUnavailable) as info:
        await model(HI)
    assert info.value.retry_after == 7.0


async def test_the_key_never_leaks(kernel, serve):
    fake = FakeGemini(key="the-right-key", echo_key=True)
    base = await fake.start(serve)
    model = kernel.model("gemini:gemini-test", base_url=base, api_key=KEY)
    assert KEY not in repr(model) and KEY not in repr(vars(model))
    with pytest.raises(ModelRejected) as info:
        await model(HI)
    assert "API key not valid" in str(info.value) and "(got ***)" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in str(fake.queries[0]) and KEY not in base


async def test_a_blocked_prompt_is_rejected(model, gemini):
    gemini.answer_with(
        {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
            "modelVersion": "gemini-test-001",
            "responseId": "r-b",
        }
    )
    with pytest.raises(ModelRejected, match=re.escape("prompt was blocked (PROHIBITED_CONTENT)")):
        await model(HI)


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "malformed_function_call"),
    ],
)
async def test_finish_reasons(model, gemini, finish, reason):
    gemini.answer_with(chunk({"text": "partial"}, finish=finish))
    assert (await model(HI)).finish_reason == reason


async def test_generated_images_come_back_as_image_blocks(model, gemini):
    gemini.answer_with(
        chunk(
            {"text": "Here:"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
            finish="STOP",
        )
    )
    content = (await model(HI)).content
    assert content[1].type == "image" and content[1].source.data == "iVBORw0K"


async def test_capabilities_are_declared_and_can_be_overridden(kernel):
    from aopkit.models import Capabilities

    model = kernel.model("gemini:gemini-test")
    assert model.capabilities.structured_output and model.capabilities.thinking
    assert model.capabilities.media == {"image", "audio", "video"}
    plain = Capabilities(streaming=False)
    assert kernel.model("gemini:x", capabilities=plain).capabilities is plain


async def test_the_multiagent_formatter_is_chosen_by_name(kernel, gemini):
    model = kernel.model(
        "gemini:gemini-test",
        base_url=gemini.base_url,
        api_key=KEY,
        formatter="gemini-multiagent",
        retry=NO_RETRY,
    )
    gemini.answer_with(chunk({"text": "Hi both"}, finish="STOP"))
    await model([Msg("alice", "hi", "user"), Msg("carol", "hello", "assistant")])
    assert gemini.last["contents"] == [
        {"role": "user", "parts": [{"text": "alice: hi\ncarol: hello"}]}
    ]
