"""A fault-injection server: a loopback aiohttp server that speaks a provider's wire protocol
(OpenAI chat completions or Anthropic messages) and, on request, misbehaves.

Tests queue what the next requests get (``server.queue(...)``); once the queue is empty the
server answers with ``server.default``. Every request body is recorded, so a test can count the
model calls a fault cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

Handler = Callable[[web.Request, dict[str, Any], "Dialect"], Awaitable[web.StreamResponse]]


# -- what a request can get ---------------------------------------------------------------------
@attrs.frozen
class Answer:
    """A normal answer: text, and/or tool calls given as (name, raw argument text)."""

    text: str = ""
    tools: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Status:
    """An error status with the provider's error body (and headers, e.g. Retry-After)."""

    status: int
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class HTMLPage:
    """What a proxy or gateway sends: an HTML error page."""

    status: int = 502


@attrs.frozen
class Slow:
    """Wait before sending anything (a slow first byte), then answer ``then``."""

    seconds: float
    then: Answer = Answer("late")


@attrs.frozen
class Reset:
    """Drop the connection without an answer."""


@attrs.frozen
class CutStream:
    """Start a streamed answer and stop in the middle of an event."""

    text: str = "partial answer"


Fault = Answer | Status | HTMLPage | Slow | Reset | CutStream


# -- the two wire protocols ---------------------------------------------------------------------
class OpenAI:
    path = "/v1/chat/completions"

    def body(self, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.tools:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
                for i, (name, args) in enumerate(answer.tools)
            ]
        return {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if answer.tools else "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        }

    def events(self, answer: Answer) -> list[str]:
        """SSE events of a streamed answer: the text in two chunks, usage, then [DONE]."""
        half = len(answer.text) // 2
        chunks = [answer.text[:half], answer.text[half:]]
        out = [
            json.dumps(
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}],
                }
            )
            for c in chunks
        ]
        out.append(
            json.dumps(
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
                }
            )
        )
        out.append("[DONE]")
        return [f"data: {data}" for data in out]

    def error(self, status: int) -> dict[str, Any]:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return {
            "error": {"message": f"injected {status}", "type": kind, "param": None, "code": kind}
        }


class Anthropic:
    path = "/v1/messages"

    def body(self, answer: Answer) -> dict[str, Any]:
        content: list[dict[str, Any]] = (
            [{"type": "text", "text": answer.text}] if answer.text else []
        )
        for i, (name, args) in enumerate(answer.tools):
            try:
                parsed = json.loads(args)
            except ValueError:
                parsed = {"_unparsed": args}  # the API itself always sends an object
            content.append({"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": parsed})
        return {
            "id": "msg_fault",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": content,
            "stop_reason": "tool_use" if answer.tools else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 3},
        }

    def events(self, answer: Answer) -> list[str]:
        """SSE events (``event:`` and ``data:`` lines) of a streamed answer."""
        half = len(answer.text) // 2
        out = [
            json.dumps(
                {"type": "message_start", "message": {**self.body(Answer()), "content": []}}
            ),
            json.dumps(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
        ]
        for part in (answer.text[:half], answer.text[half:]):
            out.append(
                json.dumps(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": part},
                    }
                )
            )
        out.append(json.dumps({"type": "content_block_stop", "index": 0}))
        out.append(
            json.dumps(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 3},
                }
            )
        )
        out.append(json.dumps({"type": "message_stop"}))
        return [f"event: {json.loads(data)['type']}\ndata: {data}" for data in out]

    def error(self, status: int) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"injected {status}"}}


class Responses:
    path = "/v1/responses"

    def body(self, answer: Answer) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if answer.text:
            output.append(self._message(answer.text))
        for i, (name, args) in enumerate(answer.tools):
            output.append(
                {
                    "id": f"fc_{i}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": f"call_{i}",
                    "name": name,
                    "arguments": args,
                }
            )
        return {
            "id": "resp_fault",
            "object": "response",
            "created_at": 0,
            "model": "m",
            "status": "completed",
            "output": output,
            "usage": {"input_tokens": 9, "output_tokens": 3, "total_tokens": 12},
        }

    def _message(self, text: str) -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": []}
        return {"id": "msg_fault", "type": "message", "role": "assistant", "content": [part]}

    def events(self, answer: Answer) -> list[str]:
        """SSE events (``event:`` and ``data:`` lines): the text in two deltas, then
        ``response.completed``."""
        half = len(answer.text) // 2
        body = self.body(answer)
        where = {"output_index": 0, "item_id": "msg_fault", "content_index": 0}
        out: list[dict[str, Any]] = [
            {"type": "response.created", "response": {**body, "output": [], "usage": None}},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**self._message(""), "content": []},
            },
        ]
        for part in (answer.text[:half], answer.text[half:]):
            out.append({**where, "type": "response.output_text.delta", "delta": part})
        out.append(
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": self._message(answer.text),
            }
        )
        out.append({"type": "response.completed", "response": body})
        return [f"event: {e['type']}\ndata: {json.dumps(e)}" for e in out]

    def error(self, status: int) -> dict[str, Any]:
        return OpenAI().error(status)


Dialect = OpenAI | Anthropic | Responses


class FaultServer:
    """``server = FaultServer(OpenAI()); base = await serve(server.app())``."""

    def __init__(self, dialect: Dialect, default: Fault = Answer("ok")) -> None:
        self.dialect = dialect
        self.default = default
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []

    def queue(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.dialect.path, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        fault = self.faults.pop(0) if self.faults else self.default
        if isinstance(fault, Slow):
            await asyncio.sleep(fault.seconds)
            fault = fault.then
        if isinstance(fault, Reset):
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if isinstance(fault, Status):
            return web.json_response(
                self.dialect.error(fault.status), status=fault.status, headers=fault.headers
            )
        if isinstance(fault, HTMLPage):
            page = f"<html><body><h1>{fault.status} Bad Gateway</h1></body></html>"
            return web.Response(text=page, status=fault.status, content_type="text/html")
        if isinstance(fault, CutStream):
            return await self._stream(request, self.dialect.events(Answer(fault.text)), cut=True)
        if body.get("stream"):
            return await self._stream(request, self.dialect.events(fault))
        return web.json_response(self.dialect.body(fault))

    async def _stream(
        self, request: web.Request, events: list[str], cut: bool = False
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if cut:  # two whole events, then half of the third, then the connection closes
            for event in events[:2]:
                await response.write(f"{event}\n\n".encode())
            await response.write(events[2][: len(events[2]) // 2].encode())
            assert request.transport is not None
            request.transport.abort()
            return response
        for event in events:
            await response.write(f"{event}\n\n".encode())
        await response.write_eof()
        return response
