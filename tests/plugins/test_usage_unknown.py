"""Usage a server did not report is unknown (``None``), never ``Usage(0, 0)``: for every HTTP
provider, plain and streamed, with the usage left out, sent as ``null``, or garbled; and counts
that were reported come through, a reported 0 included."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from aiohttp import web

from aopkit import Msg
from aopkit.events import ModelCallFinished
from aopkit.models import Usage, reported_tokens
from aopkit.retry import NO_RETRY
from tests.kernel.helpers import Recorder

HI = [Msg("user", "hi", "user")]


def openai(usage: Any, stream: bool) -> tuple[str, bytes]:
    extra = {} if usage is attrs.NOTHING else {"usage": usage}
    if not stream:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            **extra,
        }
        return "application/json", json.dumps(body).encode()
    delta = {"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}
    events = [{"id": "chatcmpl-1", "choices": [delta]}]
    if extra:
        events.append({"id": "chatcmpl-1", "choices": [], **extra})
    return "text/event-stream", sse([*events, "[DONE]"])


def anthropic(usage: Any, stream: bool) -> tuple[str, bytes]:
    extra = {} if usage is attrs.NOTHING else {"usage": usage}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m"}
    if not stream:
        body = {
            **message,
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            **extra,
        }
        return "application/json", json.dumps(body).encode()
    events = [
        {"type": "message_start", "message": {**message, "content": [], **extra}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, **extra},
        {"type": "message_stop"},
    ]
    return "text/event-stream", sse(events)


def gemini(usage: Any, stream: bool) -> tuple[str, bytes]:
    extra = {} if usage is attrs.NOTHING else {"usageMetadata": usage}
    candidate = {"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}
    body = {"candidates": [candidate], "responseId": "r1", **extra}
    if not stream:
        return "application/json", json.dumps(body).encode()
    return "text/event-stream", sse([body])


def dashscope(usage: Any, stream: bool) -> tuple[str, bytes]:
    extra = {} if usage is attrs.NOTHING else {"usage": usage}
    choice = {"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    body = {"request_id": "r1", "output": {"choices": [choice]}, **extra}
    if not stream:
        return "application/json", json.dumps(body).encode()
    return "text/event-stream", f"id:1\nevent:result\ndata:{json.dumps(body)}\n\n".encode()


def ollama(usage: Any, stream: bool) -> tuple[str, bytes]:
    extra = {} if usage is attrs.NOTHING else usage
    last = {"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": True}
    last = {**last, "done_reason": "stop", **extra}
    if not stream:
        return "application/json", json.dumps(last).encode()
    first = {"model": "m", "message": {"role": "assistant", "content": "h"}, "done": False}
    last["message"]["content"] = "i"
    return "application/x-ndjson", f"{json.dumps(first)}\n{json.dumps(last)}\n".encode()


def openai_responses(usage: Any, stream: bool) -> tuple[str, bytes]:
    extra = {} if usage is attrs.NOTHING else {"usage": usage}
    item = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "hi", "annotations": []}],
    }
    body = {"id": "resp_1", "object": "response", "status": "completed", "output": [item]}
    if not stream:
        return "application/json", json.dumps({**body, **extra}).encode()
    events = [
        {"type": "response.created", "response": {**body, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {
            "type": "response.output_text.delta",
            "output_index": 0,
            "content_index": 0,
            "delta": "hi",
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {**body, **extra}},
    ]
    return "text/event-stream", b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events
    )


def sse(events: list[Any]) -> bytes:
    return b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )


# provider -> (answer maker, usage as reported with 5 in and 3 out, usage fields all null)
PROVIDERS = {
    "openai": (openai, {"prompt_tokens": 5, "completion_tokens": 3}, {"prompt_tokens": None}),
    "anthropic": (anthropic, {"input_tokens": 5, "output_tokens": 3}, {"input_tokens": None}),
    "gemini": (
        gemini,
        {"promptTokenCount": 5, "candidatesTokenCount": 3},
        {"promptTokenCount": None},
    ),
    "dashscope": (dashscope, {"input_tokens": 5, "output_tokens": 3}, {"input_tokens": None}),
    "ollama": (ollama, {"prompt_eval_count": 5, "eval_count": 3}, {"eval_count": None}),
    "openai-responses": (
        openai_responses,
        {"input_tokens": 5, "output_tokens": 3},
        {"input_tokens": None},
    ),
}


@pytest.fixture
def serve_answer(kernel, serve):
    async def start(provider: str, usage: Any, stream: bool):
        maker = PROVIDERS[provider][0]
        content_type, body = maker(usage, stream)

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", handler)
        base = await serve(app)
        return kernel.model(f"{provider}:m", base_url=base, api_key="k", retry=NO_RETRY)

    return start


async def answer(model, stream: bool):
    if not stream:
        return await model(HI)
    chunks = [c async for c in await model(HI, stream=True)]
    return chunks[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("how", ["absent", "null", "fields null", "garbled"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_usage_not_reported_is_unknown(kernel, serve_answer, provider, how, stream):
    usage = {
        "absent": attrs.NOTHING,
        "null": None,
        "fields null": PROVIDERS[provider][2],
        "garbled": "lots" if provider != "ollama" else {"eval_count": "lots"},
    }[how]
    if provider == "ollama" and how == "null":
        usage = {"prompt_eval_count": None, "eval_count": None}
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    response = await answer(await serve_answer(provider, usage, stream), stream)
    assert response.text == "hi"
    assert response.usage is not None and response.usage.seconds > 0
    assert response.usage.output_tokens is None
    if how != "fields null":
        assert response.usage.input_tokens is None
    (event,) = recorder.of(ModelCallFinished)
    assert event.usage["output_tokens"] is None  # events say unknown too


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_reported_usage_comes_through(serve_answer, provider, stream):
    response = await answer(await serve_answer(provider, PROVIDERS[provider][1], stream), stream)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 3)


async def test_a_reported_zero_stays_zero(serve_answer):
    response = await answer(
        await serve_answer("openai", {"prompt_tokens": 0, "completion_tokens": 0}, False), False
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (0, 0)


def test_reported_tokens_takes_counts_only():
    assert reported_tokens(3, None, 4) == 7
    assert reported_tokens(0) == 0
    assert reported_tokens() is None
    assert reported_tokens(None, "5", -1, True, 2.5, 2**64) is None
    assert reported_tokens(2**64 - 1) == 2**64 - 1  # the largest count a call can have
    assert Usage() == Usage(None, None, 0.0)


def test_the_codec_round_trips_unknown_usage(kernel):
    from aopkit.models import ChatResponse

    response = ChatResponse(usage=Usage(None, 3, 0.5))
    dumped = kernel.codec.dump(response)
    assert dumped["usage"] == {"input_tokens": None, "output_tokens": 3, "seconds": 0.5}
    assert kernel.codec.load(dumped, ChatResponse) == response


# provider -> usage reporting 100 in (40 of them from the cache, 10 written to it where the
# API says so) and 30 out (12 of them reasoning), and what the Usage must hold
DETAILS = {
    "openai": (
        {
            "prompt_tokens": 100,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 12},
        },
        (100, 30, 40, None, 12),
    ),
    "anthropic": (  # input_tokens excludes what was read from or written to the cache
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 40,
            "cache_creation_input_tokens": 10,
            "output_tokens": 30,
        },
        (100, 30, 40, 10, None),
    ),
    "gemini": (  # candidatesTokenCount excludes the thoughts
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 40,
            "candidatesTokenCount": 18,
            "thoughtsTokenCount": 12,
        },
        (100, 30, 40, None, 12),
    ),
    "dashscope": (
        {
            "input_tokens": 100,
            "output_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 40},
            "output_tokens_details": {"reasoning_tokens": 12},
        },
        (100, 30, 40, None, 12),
    ),
    "ollama": ({"prompt_eval_count": 100, "eval_count": 30}, (100, 30, None, None, None)),
    "openai-responses": (
        {
            "input_tokens": 100,
            "output_tokens": 30,
            "input_tokens_details": {"cached_tokens": 40},
            "output_tokens_details": {"reasoning_tokens": 12},
        },
        (100, 30, 40, None, 12),
    ),
}


def parts(usage: Usage) -> tuple[Any, ...]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(DETAILS))
async def test_cached_and_reasoning_tokens_come_through(serve_answer, provider, stream):
    reported, expected = DETAILS[provider]
    response = await answer(await serve_answer(provider, reported, stream), stream)
    assert parts(response.usage) == expected


@pytest.mark.parametrize("provider", ["openai", "dashscope", "openai-responses"])
async def test_garbled_details_are_unknown_not_zero(serve_answer, provider):
    reported = dict(DETAILS[provider][0])
    details = [k for k in reported if k.endswith("_details")]
    reported[details[0]] = "lots"  # not an object
    reported[details[1]] = {"reasoning_tokens": None}
    response = await answer(await serve_answer(provider, reported, False), False)
    assert parts(response.usage) == (100, 30, None, None, None)
