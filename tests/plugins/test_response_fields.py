"""Every first-party provider reports the response id, the answering model and the finish reason
its server sent, whole or streamed, and ``None`` for what the server did not send: never an
invented value, never a crash on a server that sends a number or null instead of a string."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from aopkit import Msg
from aopkit.models import ChatResponse, ModelUnavailable
from aopkit.retry import NO_RETRY
from aopkit.testing.fakes.anthropic import FakeAnthropic, message, text
from aopkit.testing.fakes.dashscope import Answer as DashAnswer
from aopkit.testing.fakes.dashscope import FakeDashScope
from aopkit.testing.fakes.gemini import FakeGemini
from aopkit.testing.fakes.gemini import chunk as gemini_chunk
from aopkit.testing.fakes.ollama import Answer as OllamaAnswer
from aopkit.testing.fakes.ollama import FakeOllama
from aopkit.testing.fakes.openai import FakeOpenAI, completion
from aopkit.testing.fakes.openai_responses import FakeResponses
from aopkit.testing.fakes.openai_responses import response as responses_body

KEY = "sk-fields-test-0b7e"
HI = [Msg("user", "hi", "user")]


async def _openai(kernel, serve):
    fake = FakeOpenAI(key=KEY)
    await fake.start(serve)
    fake.then(completion("Hello"), completion("Hello"))
    return kernel.model("openai:gpt-test", base_url=fake.base_url, api_key=KEY, retry=NO_RETRY)


async def _anthropic(kernel, serve):
    fake = FakeAnthropic(message(text("Hello")), message(text("Hello")))
    base = await fake.start(serve)
    return kernel.model("anthropic:claude-test", base_url=base, api_key=KEY, retry=NO_RETRY)


async def _gemini(kernel, serve):
    fake = FakeGemini(key=KEY)
    base = await serve(fake.app())
    fake.answer_with(gemini_chunk({"text": "Hello"}, finish="STOP", response_id="r-1"))
    fake.stream(gemini_chunk({"text": "Hel"}), gemini_chunk({"text": "lo"}, finish="STOP"))
    return kernel.model("gemini:gemini-test", base_url=base, api_key=KEY, retry=NO_RETRY)


async def _ollama(kernel, serve):
    fake = FakeOllama(OllamaAnswer("Hello"), OllamaAnswer("Hello"))
    base = await fake.start(serve)
    return kernel.model("ollama:llama3.2", base_url=base, retry=NO_RETRY)


async def _dashscope(kernel, serve):
    fake = FakeDashScope(DashAnswer("Hello"), DashAnswer("Hello"), key=KEY)
    base = await fake.start(serve)
    return kernel.model("dashscope:qwen-plus", base_url=base, api_key=KEY, retry=NO_RETRY)


async def _openai_responses(kernel, serve):
    fake = FakeResponses(responses_body("Hello"), responses_body("Hello"), key=KEY)
    base = await fake.start(serve)
    return kernel.model("openai-responses:gpt-test", base_url=base, api_key=KEY, retry=NO_RETRY)


# provider -> (its fake server, how its ids look, the model its server names, finish reason)
PROVIDERS = {
    "openai": (_openai, "chatcmpl-fake", "gpt-fake", "stop"),
    "anthropic": (_anthropic, "msg_fake", "claude-fake", "end_turn"),
    "gemini": (_gemini, "r", "gemini-test-001", "stop"),
    "ollama": (_ollama, None, "llama3.2", "stop"),  # Ollama's answers carry no id
    "dashscope": (_dashscope, "", None, "stop"),  # its native API names no model
    "openai-responses": (_openai_responses, "resp_fake", "gpt-fake", "completed"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_response_carries_what_the_server_reported(kernel, serve, provider):
    make, id_prefix, answered_by, finish = PROVIDERS[provider]
    model = await make(kernel, serve)
    whole = await model(HI)
    last = [r async for r in await model(HI, stream=True)][-1]
    for response in (whole, last):
        assert response.text == "Hello"
        assert response.finish_reason == finish
        assert response.model == answered_by
        if id_prefix is None:
            assert response.id is None
        else:
            assert isinstance(response.id, str) and response.id.startswith(id_prefix)


@pytest.mark.parametrize("value", [None, "", 7, 0.5, True, {"name": "x"}, ["a"]])
def test_a_response_field_that_is_not_a_non_empty_string_is_none(value):
    response = ChatResponse(finish_reason=value, id=value, model=value)
    assert (response.finish_reason, response.id, response.model) == (None, None, None)


async def test_an_openai_server_sending_numbers_and_nulls_gives_none_not_a_crash(kernel, serve):
    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        choice = {"index": 0, "message": {"role": "assistant", "content": "Hello"}}
        if not body.get("stream"):
            choice["finish_reason"] = 3
            return web.json_response({"id": 12, "model": None, "choices": [choice]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": {"x": 1}, "model": 5, "choices": [{**choice, "finish_reason": None}]}
        chunk["choices"][0]["delta"] = chunk["choices"][0].pop("message")
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/chat/completions", answer)
    base = await serve(app)
    model = kernel.model("openai:gpt-test", base_url=base, api_key=KEY, retry=NO_RETRY)
    whole = await model(HI)
    last = [r async for r in await model(HI, stream=True)][-1]
    for response in (whole, last):
        assert response.text == "Hello"
        assert (response.id, response.model, response.finish_reason) == (None, None, None)


async def test_a_gemini_finish_reason_that_is_not_text_is_not_a_crash(kernel, serve):
    fake = FakeGemini(key=KEY)
    base = await serve(fake.app())
    body = gemini_chunk({"text": "Hello"}, finish="STOP")
    body["candidates"][0]["finishReason"] = 1
    body["modelVersion"] = None
    fake.answer_with(body)
    model = kernel.model("gemini:gemini-test", base_url=base, api_key=KEY, retry=NO_RETRY)
    with pytest.raises(
        ModelUnavailable, match="no candidate"
    ):  # no usable finish reason: no answer
        await model(HI)
