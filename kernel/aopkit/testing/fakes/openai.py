"""A loopback stand-in for OpenAI chat completions (and the compatible servers that copy it).

It answers ``POST /v1/chat/completions`` as the service does: a ``chat.completion`` as JSON, or
with ``"stream": true`` SSE ``chat.completion.chunk`` events (a role chunk, fragmented content /
reasoning deltas, tool calls whose arguments come in fragments keyed by ``index``, a finish
chunk, a usage chunk with empty choices when ``stream_options.include_usage`` is set, then
``data: [DONE]``), and errors as the API's own bodies (``{"error": {message, type, param,
code}}``) and headers. Every request is checked against the official ``openai`` request types
(see :func:`check_request`); one that fails gets the 400 the API would send. Requests are kept.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from aiohttp import web

from aopkit.testing.fakes.base import FakeServer

_ids = itertools.count(1)
CREATED = 1_700_000_000


# -- checking requests against the official types ---------------------------------------------
@functools.cache
def _adapters() -> tuple[Any, Any]:
    from openai.types.chat.completion_create_params import (
        CompletionCreateParamsNonStreaming,
        CompletionCreateParamsStreaming,
    )
    from pydantic import TypeAdapter

    return (
        TypeAdapter(CompletionCreateParamsNonStreaming),
        TypeAdapter(CompletionCreateParamsStreaming),
    )


def _force(value: Any) -> Any:
    """The validated value with every lazily validated ``Iterable`` consumed (which is when
    pydantic validates its items), as plain lists and dicts."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    return [_force(v) for v in value]  # lists, tuples and pydantic's ValidatorIterator


def check_exactly(adapter: Any, payload: dict[str, Any]) -> None:
    """Raise if ``payload`` (plain JSON values) is not valid by the pydantic ``adapter`` down to
    every nested list, or if anything is dropped or coerced on the way (pydantic ignores
    unknown keys of typed dicts, so an unknown key shows as a difference)."""
    validated = _force(adapter.validate_python(payload))
    if validated != payload:
        raise ValueError(f"unknown or coerced fields: sent {payload!r}, valid {validated!r}")


def check_request(payload: dict[str, Any], *, allow: frozenset[str] = frozenset()) -> None:
    """Raise if ``payload`` is not a valid chat-completions request by the official types
    (:func:`check_exactly`). ``allow`` names message keys outside the official types that a
    compatible server takes (DeepSeek's ``reasoning_content``); they are checked to be strings
    and left out of the comparison."""
    payload = json.loads(json.dumps(payload))  # as it goes on the wire
    for message in payload.get("messages", ()):
        for key in allow & message.keys():
            if not isinstance(message.pop(key), str):
                raise ValueError(f"{key} must be a string")
    plain, streaming = _adapters()
    check_exactly(streaming if payload.get("stream") else plain, payload)


# -- what the server answers -------------------------------------------------------------------
def call(call_id: str, name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """A tool call as the API returns it (arguments are JSON text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def completion(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str | None = None,
    refusal: str | None = None,
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = (11, 7),
) -> dict[str, Any]:
    """A ``chat.completion`` body as the API returns it (``usage=None``: none reported)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning  # DeepSeek's field, beside content
    body: dict[str, Any] = {
        "id": f"chatcmpl-fake{next(_ids):04d}",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-fake",
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        }
    return body


@attrs.frozen
class Failure:
    """An HTTP error with the API's body; ``{key}`` in the message echoes the key it got."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict)

    def response(self, request: web.Request) -> web.Response:
        """The error answer to ``request``, whose key ``{key}`` echoes."""
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = error_body(self.message.format(key=given), self.type, self.code, self.param)
        return web.json_response(body, status=self.status, headers=self.headers)


@attrs.frozen
class Broken:
    """A stream that goes wrong after ``after`` chunks: an ``error`` chunk of ``kind`` if given,
    else the connection ends midway through the next chunk (no ``[DONE]``)."""

    body: dict[str, Any]
    after: int
    kind: str | None = None


@attrs.frozen
class Interleaved:
    """A streamed answer whose parallel tool calls' argument fragments alternate."""

    body: dict[str, Any]


Reply = dict[str, Any] | Failure | Broken | Interleaved


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _pieces(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


def chunks(body: dict[str, Any], usage: bool, interleave: bool = False) -> Iterator[Any]:
    """The ``chat.completion.chunk`` objects of a completion, fragmented as the API does."""
    head = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    extra = {"usage": None} if usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice], **extra}

    choice = body["choices"][0]
    message = choice["message"]
    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(message.get("reasoning_content") or "", 5):
        yield chunk({"reasoning_content": piece})
    for piece in _pieces(message.get("content") or "", 4):
        yield chunk({"content": piece})
    for piece in _pieces(message.get("refusal") or "", 6):
        yield chunk({"refusal": piece})
    fragments = []
    for index, tool_call in enumerate(message.get("tool_calls") or ()):
        function = tool_call["function"]
        first = {**tool_call, "index": index, "function": {**function, "arguments": ""}}
        rest = [
            {"index": index, "function": {"arguments": p}}
            for p in _pieces(function["arguments"], 3)
        ]
        fragments.append([first, *rest])
    if interleave:
        ordered = [f for group in itertools.zip_longest(*fragments) for f in group if f]
    else:
        ordered = [f for group in fragments for f in group]
    for fragment in ordered:
        yield chunk({"tool_calls": [fragment]})
    yield chunk({}, choice["finish_reason"])
    if usage and "usage" in body:
        yield {**head, "choices": [], "usage": body["usage"]}


def sse(data: Any) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


# -- the server --------------------------------------------------------------------------------
def refuse(
    request: web.Request, key: str | None, check: Callable[[], None], param: str
) -> web.Response | None:
    """The API's refusal of ``request``, or None when it is taken: 401 when it does not bear
    ``key`` (None takes any or none), 400 naming ``param`` when ``check`` raises."""
    given = request.headers.get("Authorization", "")
    if key is not None and given != f"Bearer {key}":
        body = error_body(
            f"Incorrect API key provided: {given.removeprefix('Bearer ')}. "
            "You can find your API key at the dashboard.",
            "invalid_request_error",
            "invalid_api_key",
        )
        return web.json_response(body, status=401)
    try:
        check()
    except ValueError as exc:
        body = error_body(f"Invalid request: {exc}", "invalid_request_error", None, param)
        return web.json_response(body, status=400)
    return None


class FakeOpenAI(FakeServer):
    """Answers with the scripted replies in order. ``key``: the key it expects (401 with the
    API's body otherwise); None takes any or none. ``allow``: message keys outside the official
    types that a compatible server takes."""

    routes = ("/v1/chat/completions",)
    base_path = "/v1"

    def __init__(self, *replies: Reply, key: str | None = None) -> None:
        super().__init__(*replies)
        self.key = key
        self.allow: frozenset[str] = frozenset()

    async def answer(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        check = functools.partial(check_request, payload, allow=self.allow)
        if (refused := refuse(request, self.key, check, "messages")) is not None:
            return refused
        reply = self.next_reply(completion("ok"))
        if isinstance(reply, Failure):
            return reply.response(request)
        if not payload.get("stream"):
            body = reply.body if isinstance(reply, (Broken, Interleaved)) else reply
            return web.json_response(body)
        return await self.stream(request, payload, reply)

    async def stream(
        self, request: web.Request, payload: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        body = reply.body if isinstance(reply, (Broken, Interleaved)) else reply
        assert isinstance(body, dict)
        events = list(chunks(body, usage, isinstance(reply, Interleaved)))
        if isinstance(reply, Broken):
            for event in events[: reply.after]:
                await response.write(sse(event))
            if reply.kind is not None:
                await response.write(sse(error_body("The server had an error.", reply.kind)))
                await response.write(sse("[DONE]"))
            else:  # cut midway through the next event
                await response.write(sse(events[reply.after])[:20])
            await response.write_eof()
            return response
        for event in events:
            await response.write(sse(event))
        await response.write(sse("[DONE]"))
        await response.write_eof()
        return response
