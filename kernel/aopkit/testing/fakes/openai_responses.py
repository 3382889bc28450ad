"""A loopback stand-in for OpenAI's Responses API.

It answers ``POST /v1/responses`` as the service does: a ``response`` object as JSON, or with
``"stream": true`` the semantic SSE events (``event:`` and ``data:`` lines, each with a
``sequence_number``): ``response.created``, ``response.in_progress``, per output item
``response.output_item.added``, its deltas (text and refusals in pieces, function-call
arguments in fragments, reasoning summaries), ``response.output_item.done`` with the whole item,
then ``response.completed`` / ``response.incomplete`` / ``response.failed``; no ``[DONE]``.
Every event it sends is checked against the official ``openai`` stream-event types, and every
request against the official request types (:func:`check_request`): one that fails gets the 400
the API would send. Errors have the API's own bodies and headers (:class:`Failure`, shared
with :mod:`aopkit.testing.fakes.openai`). Requests are kept.

The ``openai`` package is needed only when a request or event is checked, not to import this.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from collections.abc import Iterator
from typing import Any, Literal

import attrs
from aiohttp import web

from aopkit.testing.fakes.base import FakeServer
from aopkit.testing.fakes.openai import Failure, check_exactly, refuse

__all__ = [
    "Broken",
    "Failure",
    "FakeResponses",
    "check_event",
    "check_request",
    "events",
    "function_call",
    "message",
    "reasoning",
    "response",
]

_ids = itertools.count(1)
CREATED = 1_700_000_000


# -- checking against the official types -------------------------------------------------------
@functools.cache
def _adapters() -> tuple[Any, Any, Any]:
    from openai.types.responses import ResponseStreamEvent
    from openai.types.responses.response_create_params import (
        ResponseCreateParamsNonStreaming,
        ResponseCreateParamsStreaming,
    )
    from pydantic import TypeAdapter

    return (
        TypeAdapter(ResponseCreateParamsNonStreaming),
        TypeAdapter(ResponseCreateParamsStreaming),
        TypeAdapter(ResponseStreamEvent),
    )


def check_request(payload: dict[str, Any]) -> None:
    """Raise if ``payload`` is not a valid Responses request by the official types
    (:func:`~aopkit.testing.fakes.openai.check_exactly`: nothing unknown may pass)."""
    payload = json.loads(json.dumps(payload))  # as it goes on the wire
    plain, streaming, _ = _adapters()
    check_exactly(streaming if payload.get("stream") else plain, payload)


def check_event(event: dict[str, Any]) -> None:
    """Raise if ``event`` is not one of the API's stream events as the SDK parses them."""
    parsed = _adapters()[2].validate_python(event)
    if parsed.type != event["type"]:
        raise ValueError(f"{event['type']} parsed as {parsed.type}")


# -- what the server answers -------------------------------------------------------------------
def message(text: str, *, refusal: str | None = None) -> dict[str, Any]:
    """An assistant ``message`` output item: its text, and a refusal part if given."""
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    n = next(_ids)
    return {
        "id": f"msg_fake{n:04d}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": content,
    }


def function_call(call_id: str, name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """A ``function_call`` output item (arguments are JSON text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": f"fc_fake{next(_ids):04d}",
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": text,
    }


def reasoning(*summary: str, encrypted: str | None = "gAAAA-opaque-reasoning") -> dict[str, Any]:
    """A ``reasoning`` item with these summaries and its opaque ``encrypted_content``."""
    item: dict[str, Any] = {
        "id": f"rs_fake{next(_ids):04d}",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": s} for s in summary],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def response(
    *output: dict[str, Any] | str,
    status: str = "completed",
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
    usage: tuple[int, int] | None = (11, 7),
    cached: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A ``response`` object; a string in ``output`` is a message with that text. ``usage``
    is (input, output) tokens, ``cached`` and ``reasoning_tokens`` within them; None: none
    reported."""
    items = [message(o) if isinstance(o, str) else o for o in output]
    body: dict[str, Any] = {
        "id": f"resp_fake{next(_ids):04d}",
        "object": "response",
        "created_at": CREATED,
        "status": "incomplete" if incomplete else status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "model": "gpt-fake",
        "output": items,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "metadata": {},
        "usage": None,
    }
    if usage is not None:
        body["usage"] = {
            "input_tokens": usage[0],
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": usage[1],
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": usage[0] + usage[1],
        }
    return body


@attrs.frozen
class Broken:
    """A stream that goes wrong after ``after`` events: ``"cut"`` (the connection ends midway
    through the next event), ``"error"`` (an ``error`` event with ``code``) or ``"failed"`` (a
    ``response.failed`` whose error has ``code``); ``message``: the error's, if not the
    default."""

    body: dict[str, Any]
    after: int
    how: Literal["cut", "error", "failed"] = "cut"
    code: str | None = None
    message: str | None = None


Reply = dict[str, Any] | Failure | Broken


def _pieces(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


def events(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The stream events of a response, fragmented as the API sends them (without their
    ``sequence_number``, added when sent)."""
    head = {**body, "status": "in_progress", "output": [], "usage": None}
    head["incomplete_details"] = None
    yield {"type": "response.created", "response": head}
    yield {"type": "response.in_progress", "response": head}
    for index, item in enumerate(body["output"]):
        at = {"output_index": index}
        item_id = {"item_id": item["id"], **at}
        kind = item["type"]
        if kind == "message":
            yield {
                **at,
                "type": "response.output_item.added",
                "item": {**item, "content": [], "status": "in_progress"},
            }
            for n, part in enumerate(item["content"]):
                where = {**item_id, "content_index": n}
                empty = (
                    {**part, "text": ""}
                    if part["type"] == "output_text"
                    else {**part, "refusal": ""}
                )
                yield {**where, "type": "response.content_part.added", "part": empty}
                if part["type"] == "output_text":
                    for piece in _pieces(part["text"], 4):
                        yield {
                            **where,
                            "type": "response.output_text.delta",
                            "delta": piece,
                            "logprobs": [],
                        }
                    yield {
                        **where,
                        "type": "response.output_text.done",
                        "text": part["text"],
                        "logprobs": [],
                    }
                else:
                    for piece in _pieces(part["refusal"], 6):
                        yield {**where, "type": "response.refusal.delta", "delta": piece}
                    yield {**where, "type": "response.refusal.done", "refusal": part["refusal"]}
                yield {**where, "type": "response.content_part.done", "part": part}
        elif kind == "function_call":
            added = {**item, "arguments": "", "status": "in_progress"}
            yield {**at, "type": "response.output_item.added", "item": added}
            for piece in _pieces(item["arguments"], 3):
                yield {**item_id, "type": "response.function_call_arguments.delta", "delta": piece}
            yield {
                **item_id,
                "type": "response.function_call_arguments.done",
                "arguments": item["arguments"],
                "name": item["name"],
            }
        elif kind == "reasoning":
            added = {**item, "summary": []}
            added.pop("encrypted_content", None)  # complete only in output_item.done
            yield {**at, "type": "response.output_item.added", "item": added}
            for n, part in enumerate(item["summary"]):
                where = {**item_id, "summary_index": n}
                empty = {"type": "summary_text", "text": ""}
                yield {**where, "type": "response.reasoning_summary_part.added", "part": empty}
                for piece in _pieces(part["text"], 5):
                    yield {**where, "type": "response.reasoning_summary_text.delta", "delta": piece}
                yield {
                    **where,
                    "type": "response.reasoning_summary_text.done",
                    "text": part["text"],
                }
                yield {**where, "type": "response.reasoning_summary_part.done", "part": part}
        yield {**at, "type": "response.output_item.done", "item": item}
    terminal = {
        "completed": "response.completed",
        "incomplete": "response.incomplete",
        "failed": "response.failed",
    }[body["status"]]
    yield {"type": terminal, "response": body}


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# -- the server --------------------------------------------------------------------------------
class FakeResponses(FakeServer):
    """Answers with the scripted replies in order (``response("ok")`` when none is left).
    ``key``: the key it expects (401 with the API's body otherwise); None takes any or none."""

    routes = ("/v1/responses",)
    base_path = "/v1"

    def __init__(self, *replies: Reply, key: str | None = None) -> None:
        super().__init__(*replies)
        self.key = key

    async def answer(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        if (
            refused := refuse(request, self.key, functools.partial(check_request, payload), "input")
        ) is not None:
            return refused
        reply = self.next_reply(response("ok"))
        if isinstance(reply, Failure):
            return reply.response(request)
        if not payload.get("stream"):
            return web.json_response(reply.body if isinstance(reply, Broken) else reply)
        return await self.stream(request, reply)

    async def stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response_ = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response_.prepare(request)
        body = reply.body if isinstance(reply, Broken) else reply
        assert isinstance(body, dict)
        out = list(events(copy.deepcopy(body)))
        if isinstance(reply, Broken):
            out = out[: reply.after]
            if reply.how == "error":
                out.append(
                    {
                        "type": "error",
                        "code": reply.code,
                        "message": reply.message
                        or "The server had an error while processing your request.",
                        "param": None,
                    }
                )
            elif reply.how == "failed":
                error = {"code": reply.code, "message": reply.message or f"Failed: {reply.code}."}
                out.append(
                    {
                        "type": "response.failed",
                        "response": {**body, "status": "failed", "output": [], "error": error},
                    }
                )
        for number, event in enumerate(out):
            event = {**event, "sequence_number": number}
            check_event(event)
            await response_.write(sse(event))
        if isinstance(reply, Broken) and reply.how == "cut":
            await response_.write(sse({"type": "response.output_text.delta", "delta": "x"})[:25])
        await response_.write_eof()
        return response_
