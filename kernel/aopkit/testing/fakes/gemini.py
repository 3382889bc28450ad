"""A loopback stand-in for the Gemini API that speaks its wire protocol.

``POST /v1beta/models/{model}:generateContent`` answers one JSON ``GenerateContentResponse``;
``:streamGenerateContent?alt=sse`` answers ``data: {...}`` events (CRLF framed, no end marker).
Replies are scripted in order; every request is recorded. Like the real service, the fake checks
the key header and rejects schemas with keywords Gemini's ``Schema`` does not know, with Google's
error bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from aopkit.testing.fakes.base import FakeServer

SCHEMA_FIELDS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
        "maximum",
    }
)  # fmt: skip
TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})


def error_body(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


QUOTA = error_body(
    429,
    "RESOURCE_EXHAUSTED",
    "You exceeded your current quota, please check your plan and billing details.",
    details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
)
OVERLOADED = error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
INTERNAL = error_body(500, "INTERNAL", "An internal error has occurred. Please retry.")


def chunk(
    *parts: dict[str, Any],
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    response_id: str = "resp-1",
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` (a whole answer, or one chunk of a stream)."""
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-test-001",
        "responseId": response_id,
    }
    if usage is not None:
        body["usageMetadata"] = {
            "promptTokenCount": usage.get("prompt", 0),
            "candidatesTokenCount": usage.get("output", 0),
            "thoughtsTokenCount": usage.get("thoughts", 0),
            "totalTokenCount": sum(usage.values()),
        }
    return body


@dataclass
class Reply:
    """A scripted answer: a JSON body, or SSE events (``cut`` ends the stream mid-event)."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Any] | None = None
    cut: bool = False


class FakeGemini(FakeServer):
    """Answers with the scripted replies in order. ``key``: the key it expects in the
    ``x-goog-api-key`` header; ``echo_key``: a careless proxy that echoes the key it got in its
    error bodies."""

    routes = ("/v1beta/models/{target}",)

    def __init__(self, key: str = "test-key", echo_key: bool = False) -> None:
        super().__init__()
        self.key = key
        self.echo_key = echo_key

    def answer_with(self, *replies: Reply | dict[str, Any]) -> None:
        """Whole answers (a ``GenerateContentResponse``, or a :class:`Reply`), in order."""
        self.then(*(r if isinstance(r, Reply) else Reply(r) for r in replies))

    def stream(self, *events: Any, cut: bool = False) -> None:
        """A streamed answer of these events (``cut``: ended midway through one more)."""
        self.then(Reply(events=list(events), cut=cut))

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        method = request.match_info["target"].rpartition(":")[2]
        key = request.headers.get("x-goog-api-key")
        if key != self.key:
            message = "API key not valid. Please pass a valid API key."
            if self.echo_key:
                message += f" (got {key})"
            return web.json_response(error_body(400, "INVALID_ARGUMENT", message), status=400)
        if problems := list(_problems(body)):
            message = "\n".join(problems)
            return web.json_response(error_body(400, "INVALID_ARGUMENT", message), status=400)
        reply = self.next_reply(Reply(chunk({"text": "ok"}, finish="STOP")))
        if reply.events is None:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return web.json_response(
                error_body(400, "INVALID_ARGUMENT", "not a stream"), status=400
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in reply.events:
            data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
            await response.write(f"data: {data}\r\n\r\n".encode())
        if reply.cut:
            await response.write(b'data: {"candidates": [{"content": {"parts": [{"text": "and th')
        await response.write_eof()
        return response


def _problems(body: dict[str, Any]) -> Iterator[str]:
    """What the real service would reject in a request (the checks these tests rely on)."""
    for i, content in enumerate(body.get("contents", [])):
        if content.get("role") not in ("user", "model"):
            yield f"contents[{i}].role: must be user or model"
        if not content.get("parts"):
            yield f"contents[{i}].parts: must not be empty"
    for t, tool in enumerate(body.get("tools", [])):
        for d, declaration in enumerate(tool.get("functionDeclarations", [])):
            if "parameters" in declaration:
                where = f"tools[{t}].function_declarations[{d}].parameters"
                params = declaration["parameters"]
                if not params.get("properties"):
                    yield f"* GenerateContentRequest.{where}.properties: should be non-empty"
                yield from _schema_problems(params, where)
    schema = body.get("generationConfig", {}).get("responseSchema")
    if schema is not None:
        yield from _schema_problems(schema, "generation_config.response_schema")


def _schema_problems(schema: dict[str, Any], where: str) -> Iterator[str]:
    for key in schema:
        if key not in SCHEMA_FIELDS:
            yield f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}'"
    if "type" in schema and schema["type"] not in TYPES:
        yield f"Invalid value at '{where}.type', {schema['type']!r}"
    if schema.get("type") == "ARRAY" and "items" not in schema:
        yield f"* GenerateContentRequest.{where}.items: missing field."
    for name, sub in schema.get("properties", {}).items():
        yield from _schema_problems(sub, f"{where}.properties[{name}].value")
    if "items" in schema:
        yield from _schema_problems(schema["items"], f"{where}.items")
    for i, sub in enumerate(schema.get("anyOf", [])):
        yield from _schema_problems(sub, f"{where}.any_of[{i}]")
