"""A loopback stand-in for the Anthropic Messages API.

It answers ``POST /v1/messages`` as the service does: a Message as JSON, or with ``"stream":
true`` as SSE (message_start, ping, content blocks with fragmented text / thinking /
input_json deltas, message_delta with usage, message_stop), and errors as the API's own bodies
and headers. Every request is checked against the official ``anthropic`` request types and the
API's turn rules; a request that fails gets the 400 the API would send. Requests are recorded.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterator
from typing import Any

import attrs
from aiohttp import web

from aopkit.testing.fakes.base import FakeServer

API_VERSION = "2023-06-01"
BLOCK_TYPES = frozenset(
    {"text", "image", "thinking", "redacted_thinking", "tool_use", "tool_result"}
)
_ids = itertools.count(1)


# -- what the server answers -------------------------------------------------------------------
def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def thinking(value: str, signature: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def redacted(data: str) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def message(
    *content: dict[str, Any],
    stop_reason: str = "end_turn",
    usage: tuple[int, int] | None = (12, 7),
    cache_read: int = 0,
) -> dict[str, Any]:
    """A Message body as the API returns it (``usage=None``: none reported)."""
    body: dict[str, Any] = {
        "id": f"msg_fake{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    if usage is not None:
        body["usage"] = {
            "input_tokens": usage[0],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
            "output_tokens": usage[1],
        }
    return body


@attrs.frozen
class Failure:
    """An HTTP error with the API's body; ``{key}`` in the message echoes the key it got."""

    status: int
    kind: str
    message: str
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Broken:
    """A stream that goes wrong after ``after`` events: an ``error`` event of ``kind`` if given,
    else the connection ends midway through the next event (no message_stop)."""

    message: dict[str, Any]
    after: int
    kind: str | None = None
    error: str = "Overloaded"


Reply = dict[str, Any] | Failure | Broken


def error_body(kind: str, text_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text_}, "request_id": "req_fake"}


def _chunks(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


def events(msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The SSE events of a Message, fragmented as the API fragments them."""
    usage = msg.get("usage")
    head = {**msg, "content": [], "stop_reason": None}
    if usage is not None:
        head["usage"] = {**usage, "output_tokens": 1}
    yield {"type": "message_start", "message": head}
    yield {"type": "ping"}
    for index, block in enumerate(msg["content"]):
        kind = block["type"]
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            start: dict[str, Any] = text("")
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"], 4)]
        elif kind == "thinking":
            start = thinking("", "")
            deltas = [
                {"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"], 6)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif "input" in block:  # tool_use and server_tool_use: the input as JSON fragments
            start = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            raw = block["input"]  # a str here stands for arguments the model garbled
            raw = raw if isinstance(raw, str) else json.dumps(raw)
            deltas += [{"type": "input_json_delta", "partial_json": c} for c in _chunks(raw, 5)]
        else:
            start = block
        yield {"type": "content_block_start", "index": index, "content_block": start}
        for delta in deltas:
            yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    delta = {"stop_reason": msg["stop_reason"], "stop_sequence": None}
    counted = {} if usage is None else {"usage": {"output_tokens": usage["output_tokens"]}}
    yield {"type": "message_delta", "delta": delta, **counted}
    yield {"type": "message_stop"}


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# -- checking requests like the API ------------------------------------------------------------
@functools.cache
def _adapter(kind: Any) -> Any:
    """Validates a one-element list: pydantic takes ``extra="forbid"`` for a list of TypedDicts
    (and applies it to every nested one), not for a bare TypedDict."""
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(list[kind], config=ConfigDict(extra="forbid"))


@functools.cache
def _types() -> dict[str, Any]:
    from anthropic import types
    from anthropic.types import message_create_params as params

    return {
        "request": params.MessageCreateParamsNonStreaming,
        "stream": params.MessageCreateParamsStreaming,
        "user": types.UserMessageParam,
        "assistant": types.AssistantMessageParam,
        "tool": types.ToolParam,
        "any": types.ContentBlockParam,
        "text": types.TextBlockParam,
        "image": types.ImageBlockParam,
        "thinking": types.ThinkingBlockParam,
        "redacted_thinking": types.RedactedThinkingBlockParam,
        "tool_use": types.ToolUseBlockParam,
        "tool_result": types.ToolResultBlockParam,
    }


def _check(kind: str, value: Any) -> None:
    _adapter(_types()[kind]).validate_python([value])


def validate_request(body: dict[str, Any]) -> None:
    """Raise if the API would refuse ``body``: every part is validated against the official
    request types (nested lists one element at a time, since pydantic checks ``Iterable`` fields
    only when they are iterated), then the API's rules for turns and tool results."""
    _check("stream" if body.get("stream") else "request", body)
    system = body.get("system")
    for item in system if isinstance(system, list) else ():
        _check("text", item)
    for tool in body.get("tools", ()):
        _check("tool", tool)
    messages = body["messages"]
    assert messages, "messages: at least one message is required"
    calls: set[str] = set()  # tool_use ids of the previous assistant turn
    for n, msg in enumerate(messages):
        role = msg.get("role")
        assert role in ("user", "assistant"), f"messages.{n}.role: {role!r} is not user/assistant"
        _check(role, msg)
        if n:
            assert role != messages[n - 1]["role"], (
                f'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        content = msg["content"]
        blocks = [text(content)] if isinstance(content, str) else list(content)
        assert blocks, f"messages.{n}: all messages must have non-empty content"
        for block in blocks:
            _check(block["type"] if block.get("type") in BLOCK_TYPES else "any", block)
            if block["type"] == "text":
                assert block["text"], f"messages.{n}: text content blocks must be non-empty"
            inner = block.get("content") if block["type"] == "tool_result" else None
            for part in inner if isinstance(inner, list) else ():
                assert part.get("type") in ("text", "image"), f"tool_result holds {part}"
                _check(part["type"], part)
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if results:
            assert role == "user", f"messages.{n}: tool_result blocks belong in user turns"
            first = blocks[: len(results)]
            assert all(b["type"] == "tool_result" for b in first), (
                f"messages.{n}: tool_result blocks must come first in the content"
            )
            unexpected = set(results) - calls
            assert not unexpected, (
                f"messages.{n}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{sorted(unexpected)}. Each `tool_result` block must have a corresponding "
                "`tool_use` block in the previous message."
            )
        if calls:
            missing = calls - set(results)
            assert not missing, (
                f"messages.{n - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {sorted(missing)}"
            )
        calls = (
            {b["id"] for b in blocks if b["type"] == "tool_use"} if role == "assistant" else set()
        )


# -- the server --------------------------------------------------------------------------------
class FakeAnthropic(FakeServer):
    """Answers with the scripted replies in order (``message(text("ok"))`` once they run out);
    refuses a request without a key or with another API version, as the API does."""

    routes = ("/v1/messages",)

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        key = request.headers.get("x-api-key")
        if not key:
            return self.error(Failure(401, "authentication_error", "x-api-key header is required"))
        if request.headers.get("anthropic-version") != API_VERSION:
            return self.error(Failure(400, "invalid_request_error", "bad anthropic-version"))
        try:
            validate_request(body)
        except Exception as exc:  # pydantic's ValidationError or a broken turn rule
            return self.error(Failure(400, "invalid_request_error", str(exc)))
        reply = self.next_reply(message(text("ok")))
        if isinstance(reply, Failure):
            return self.error(reply, key)
        if not body.get("stream"):
            assert not isinstance(reply, Broken), "a broken reply needs a streaming request"
            return web.json_response(reply, headers={"request-id": "req_fake"})
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "request-id": "req_fake"}
        )
        await response.prepare(request)
        sent = events(reply.message if isinstance(reply, Broken) else reply)
        for n, event in enumerate(sent):
            if isinstance(reply, Broken) and n == reply.after:
                if reply.kind is None:  # cut midway through an event
                    await response.write(sse(event)[:25])
                else:
                    await response.write(sse(error_body(reply.kind, reply.error)))
                break
            await response.write(sse(event))
        await response.write_eof()
        return response

    @staticmethod
    def error(failure: Failure, key: str = "") -> web.Response:
        body = error_body(failure.kind, failure.message.replace("{key}", key))
        headers = {"request-id": "req_fake", "x-should-retry": str(failure.status >= 429).lower()}
        return web.json_response(
            body, status=failure.status, headers={**headers, **failure.headers}
        )
