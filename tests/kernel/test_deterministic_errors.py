"""Tier 1 retries what may pass, not a server's verdict on the request: an HTTP 5xx whose body
says the request is invalid is rejected at once, and an HTTP 500 repeated word for word for the
same request is rejected after one retry (llama.cpp's server reports invalid requests so)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from aopkit import Msg, TextBlock
from aopkit.http import HTTPChatModel, declares_invalid_request, sse_events
from aopkit.models import ChatResponse, ModelRejected, ModelUnavailable, Usage
from aopkit.retry import RetryPolicy

RETRY = RetryPolicy(attempts=4, initial=0.01, max_wait=0.02, jitter=0.0)
HI = [Msg("user", "hi", "user")]
# What llama_cpp_python's server answers to a request its pydantic model rejects.
LLAMA_CPP_500 = {
    "error": {
        "message": "[{'type': 'string_type', 'loc': ('body', 'messages', 1, 'typed-dict', "
        "'content'), 'msg': 'Input should be a valid string', 'input': None}]",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}


class Echo(HTTPChatModel):
    """The smallest HTTP model: POST, answer the text (or the streamed text)."""

    provider = "echo"
    formatter_name = "openai"

    async def _complete(self, **request: Any) -> ChatResponse:
        data = await self.request("/chat", {}).send()
        return ChatResponse([TextBlock(data["text"])], Usage())

    async def _stream(self, **request: Any) -> AsyncIterator[ChatResponse]:
        async for _, data in sse_events(self.request("/chat", {"stream": True}).lines()):
            yield ChatResponse([TextBlock(json.loads(data)["text"])])


class Script:
    """A server answering each request with the next scripted (status, body)."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.requests = 0

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        status, body = self.answers[min(self.requests, len(self.answers)) - 1]
        if status == 200 and (await request.json()).get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(f"data: {json.dumps(body)}\n\n".encode())
            return response
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)


@pytest.fixture
def server(kernel, serve):
    async def start(*answers: tuple[int, Any]) -> tuple[Script, Echo]:
        script = Script(*answers)
        app = web.Application()
        app.router.add_post("/chat", script.handler)
        model = Echo("m", kernel=kernel, base_url=await serve(app))
        model.retry = RETRY
        return script, model

    return start


async def call(model: Echo, stream: bool) -> ChatResponse:
    if not stream:
        return await model(HI)  # type: ignore[return-value]
    chunks = [c async for c in await model(HI, stream=True)]  # type: ignore[union-attr]
    return chunks[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_the_same_500_twice_is_a_rejection_after_one_retry(kernel, server, stream):
    script, model = await server((500, LLAMA_CPP_500))
    with pytest.raises(ModelRejected, match="same HTTP 500 twice") as info:
        await call(model, stream)
    assert script.requests == 2
    assert info.value.status == 500 and "Input should be a valid string" in str(info.value)
    (fault,) = kernel.faults.faults
    assert fault.calls == 1 and fault.tier is None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_500_that_changes_is_retried_as_transient(server, stream):
    answers = [(500, {"error": {"message": f"worker {i} crashed"}}) for i in range(4)]
    script, model = await server(*answers)
    with pytest.raises(ModelUnavailable, match="worker 3 crashed"):
        await call(model, stream)
    assert script.requests == RETRY.attempts


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_500_then_an_answer_succeeds(server, stream):
    script, model = await server((500, LLAMA_CPP_500), (200, {"text": "ok"}))
    assert (await call(model, stream)).text == "ok"
    assert script.requests == 2


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_overload_and_gateway_errors_repeated_are_still_retried(server, status):
    script, model = await server((status, {"error": {"message": "overloaded"}}))
    with pytest.raises(ModelUnavailable, match="overloaded"):
        await model(HI)
    assert script.requests == RETRY.attempts


async def test_a_repeated_html_500_is_a_rejection_too(server):
    script, model = await server((500, "<html><body>Internal Server Error</body></html>"))
    with pytest.raises(ModelRejected, match="HTML page"):
        await model(HI)
    assert script.requests == 2


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "bad messages", "type": "invalid_request_error"}},
        {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
        {"error": {"message": "bad", "type": "None", "code": "400"}},
        {"code": 422, "message": "unprocessable"},
    ],
)
@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_whose_body_says_the_request_is_invalid_is_rejected_at_once(
    server, body, status
):
    script, model = await server((status, body))
    with pytest.raises(ModelRejected) as info:
        await model(HI)
    assert script.requests == 1 and info.value.status == status


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"error": {"message": "slow down", "code": 429}}),
        json.dumps({"error": {"message": "timeout", "code": "408"}}),
        json.dumps({"error": {"message": "boom", "type": "server_error", "code": 500}}),
        json.dumps({"error": {"message": "x", "code": True}}),
        json.dumps(LLAMA_CPP_500),
        json.dumps([{"error": "list"}]),
        json.dumps("text"),
        "<html>400</html>",
        "",
    ],
)
def test_bodies_that_do_not_declare_an_invalid_request(body):
    assert not declares_invalid_request(body)


def test_declared_invalid_request_needs_a_structured_field_not_prose():
    prose = {"error": {"message": "invalid_request_error: code 400", "type": "server_error"}}
    assert not declares_invalid_request(json.dumps(prose))
    assert declares_invalid_request(json.dumps({"error": {"type": "invalid_request_error"}}))
