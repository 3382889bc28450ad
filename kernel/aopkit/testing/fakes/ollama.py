"""A loopback stand-in for Ollama's ``POST /api/chat``.

It answers as an Ollama server does: one JSON object with ``"stream": false``, else (streaming
is Ollama's default) newline-delimited JSON: thinking and text in fragments, tool calls whole in
one object, and a last object with ``"done": true``, ``done_reason`` and the token counts.
Errors are Ollama's ``{"error": "..."}`` bodies with its status codes (404 for a model it does
not have); a failure midway through a stream is an ``{"error": ...}`` line. Requests are checked
as the server checks them (a bad one gets a 400) and recorded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import attrs
from aiohttp import web

from aopkit.testing.fakes.base import FakeServer

PATH = "/api/chat"
CREATED = "2025-06-01T12:00:00.000000Z"


def call(name: str, arguments: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    """A tool call as Ollama sends it; newer servers add an ``id``."""
    out: dict[str, Any] = {"function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        out["id"] = call_id
    return out


@attrs.frozen
class Answer:
    text: str = ""
    thinking: str = ""
    calls: tuple[dict[str, Any], ...] = ()
    done_reason: str = "stop"
    counts: tuple[int, int] | None = (26, 12)  # prompt_eval_count, eval_count; None: left out


@attrs.frozen
class Failure:
    """An HTTP error with Ollama's body; ``{key}`` in the message echoes the key it got."""

    status: int
    error: str
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Broken:
    """A stream that goes wrong after ``after`` lines: an ``{"error": ...}`` line if ``error``
    is given, else the connection ends midway through the next line (or right after the last
    whole one when not ``midway``)."""

    answer: Answer
    after: int
    error: str | None = None
    midway: bool = True


Reply = Answer | Failure | Broken


def _stats(answer: Answer) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "done_reason": answer.done_reason,
        "done": True,
        "total_duration": 4883583458,
        "load_duration": 1334875,
    }
    if answer.counts is not None:
        prompt, output = answer.counts
        stats.update(
            prompt_eval_count=prompt,
            prompt_eval_duration=342546000,
            eval_count=output,
            eval_duration=4535599000,
        )
    return stats


def answer_body(model: str, answer: Answer) -> dict[str, Any]:
    """The object of a non-streamed answer."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.thinking:
        message["thinking"] = answer.thinking
    if answer.calls:
        message["tool_calls"] = list(answer.calls)
    return {"model": model, "created_at": CREATED, "message": message, **_stats(answer)}


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def lines(model: str, answer: Answer) -> Iterator[dict[str, Any]]:
    """The objects of a streamed answer."""
    head = {"model": model, "created_at": CREATED}
    for piece in _pieces(answer.thinking, 5):
        message: dict[str, Any] = {"role": "assistant", "content": "", "thinking": piece}
        yield {**head, "message": message, "done": False}
    for piece in _pieces(answer.text, 4):
        yield {**head, "message": {"role": "assistant", "content": piece}, "done": False}
    if answer.calls:
        message = {"role": "assistant", "content": "", "tool_calls": list(answer.calls)}
        yield {**head, "message": message, "done": False}
    yield {**head, "message": {"role": "assistant", "content": ""}, **_stats(answer)}


# -- checking requests like the server ------------------------------------------------------------
def validate_request(body: dict[str, Any]) -> None:
    """Raise AssertionError with the server's complaint if it would refuse ``body``. Tool results
    are also checked to name a tool the assistant called (Ollama pairs them by name)."""
    assert isinstance(body.get("model"), str) and body["model"], "model is required"
    messages = body.get("messages")
    assert isinstance(messages, list), "messages must be a list"
    called: list[str] = []
    for n, msg in enumerate(messages):
        role = msg.get("role")
        assert role in ("system", "user", "assistant", "tool"), f"messages[{n}]: bad role {role}"
        assert isinstance(msg.get("content"), str), f"messages[{n}].content must be a string"
        for image in msg.get("images") or ():
            base64.b64decode(image, validate=True)  # bare base64, no data URL, no URL
        if role == "tool":
            assert msg.get("tool_name") in called, f"messages[{n}]: result of no tool call"
            continue
        called = []
        for c in msg.get("tool_calls") or ():
            assert role == "assistant", f"messages[{n}]: tool_calls belong to the assistant"
            assert isinstance(c["function"]["arguments"], dict), "arguments must be an object"
            called.append(c["function"]["name"])
        if "thinking" in msg:
            assert isinstance(msg["thinking"], str), f"messages[{n}].thinking must be a string"
    for tool in body.get("tools") or ():
        assert tool["type"] == "function" and tool["function"]["name"], f"bad tool {tool}"
        assert isinstance(tool["function"].get("parameters"), dict), f"bad tool {tool}"
    fmt = body.get("format")
    assert fmt is None or fmt == "json" or isinstance(fmt, dict), f"invalid format: {fmt!r}"
    think = body.get("think")
    assert think in (None, True, False, "low", "medium", "high"), f"invalid think {think!r}"
    assert isinstance(body.get("stream", True), bool), "stream must be a boolean"


# -- the server ---------------------------------------------------------------------------------
class FakeOllama(FakeServer):
    """Answers with the scripted replies in order (``Answer("ok")`` once they run out). ``key``
    makes it require a Bearer token, as a proxy in front of Ollama would; ``models`` are the
    models it has."""

    routes = (PATH,)

    def __init__(
        self, *replies: Reply, key: str = "", models: tuple[str, ...] = ("llama3.2", "qwen3")
    ) -> None:
        super().__init__(*replies)
        self.key = key
        self.models = models

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.key and given != self.key:
            return self.error(Failure(401, "unauthorized"))
        try:
            validate_request(body)
        except AssertionError as exc:
            return self.error(Failure(400, str(exc)))
        model = body["model"]
        if model not in self.models:
            return self.error(Failure(404, f"model '{model}' not found"))
        reply = self.next_reply(Answer("ok"))
        if isinstance(reply, Failure):
            return self.error(reply, given)
        if body.get("stream", True) is False:
            assert isinstance(reply, Answer), "a broken reply needs a streaming request"
            return web.json_response(answer_body(model, reply))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        answer = reply.answer if isinstance(reply, Broken) else reply
        for n, item in enumerate(lines(model, answer)):
            line = json.dumps(item).encode() + b"\n"
            if isinstance(reply, Broken) and n >= reply.after:
                if reply.error is not None:
                    await response.write(json.dumps({"error": reply.error}).encode() + b"\n")
                elif reply.midway:
                    await response.write(line[:30])
                break
            await response.write(line)
        await response.write_eof()
        return response

    @staticmethod
    def error(failure: Failure, key: str = "") -> web.Response:
        body = {"error": failure.error.replace("{key}", key)}
        return web.json_response(body, status=failure.status, headers=failure.headers)
