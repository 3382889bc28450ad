"""A loopback stand-in for DashScope's native generation API.

It answers ``POST /api/v1/services/aigc/text-generation/generation`` and the multimodal
endpoint as the service does: a JSON body (``output.choices[0].message``, ``usage``,
``request_id``), or with ``X-DashScope-SSE: enable`` a stream of ``id:`` / ``event:result`` /
``:HTTP_STATUS/200`` / ``data:`` frames in incremental mode: reasoning and text in fragments,
tool calls as fragments keyed by ``index`` (the first with id and name, the rest ``"id": ""`` and
more argument text), ``finish_reason`` the string ``"null"`` until the last frame. Errors are
DashScope's ``{"code", "message", "request_id"}`` bodies, as SSE error events when streaming.
Requests are checked the way the service checks them (a bad one gets a 400) and recorded.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import attrs
from aiohttp import web

from aopkit.testing.fakes.base import FakeServer

TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
PART_KEYS = frozenset({"text", "image", "audio", "video"})
JSON_MODE_ERROR = (
    "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
    "'json_object'."
)
_ids = itertools.count(1)


def call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, str]:
    """A tool call of an answer; a str stands for arguments the model garbled."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "name": name, "arguments": text}


@attrs.frozen
class Answer:
    text: str = ""
    reasoning: str = ""
    calls: tuple[dict[str, str], ...] = ()
    finish: str | None = None  # "tool_calls" when there are calls, else "stop"
    usage: tuple[int, int] | None = (12, 7)  # None: not reported

    @property
    def finish_reason(self) -> str:
        return self.finish or ("tool_calls" if self.calls else "stop")


@attrs.frozen
class Failure:
    """An HTTP error with DashScope's body; ``{key}`` in the message echoes the key it got."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Broken:
    """A stream that goes wrong after ``after`` frames: an error event (``code``) if given, else
    the connection ends midway through the next frame (or right after the last whole one when
    not ``midway``)."""

    answer: Answer
    after: int
    code: str | None = None
    midway: bool = True
    status: int = 500
    message: str = "An internal error has occured, please try again later."


Reply = Answer | Failure | Broken


def _request_id() -> str:
    return f"fa4e0000-0000-4000-8000-{next(_ids):012d}"


def _content(text: str, parts: bool) -> str | list[dict[str, str]]:
    return [{"text": text}] if parts else text


def answer_body(answer: Answer, parts: bool) -> dict[str, Any]:
    """The JSON body of a non-streamed answer."""
    message: dict[str, Any] = {"role": "assistant", "content": _content(answer.text, parts)}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.calls:
        message["tool_calls"] = [
            {
                "index": i,
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in enumerate(answer.calls)
        ]
    return {
        "output": {"choices": [{"finish_reason": answer.finish_reason, "message": message}]},
        **_usage(answer.usage, last=True, n=0),
        "request_id": _request_id(),
    }


def _usage(usage: tuple[int, int] | None, *, last: bool, n: int) -> dict[str, Any]:
    """The ``usage`` of a body or of the ``n``-th frame of a stream (counting up to the end)."""
    if usage is None:
        return {}
    prompt, output = usage
    spent = output if last else min(n, output)
    return {
        "usage": {"input_tokens": prompt, "output_tokens": spent, "total_tokens": prompt + spent}
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def events(answer: Answer, parts: bool) -> Iterator[dict[str, Any]]:
    """The ``data`` objects of a streamed answer, fragmented as DashScope fragments them."""
    request_id = _request_id()
    deltas: list[dict[str, Any]] = []
    for piece in _pieces(answer.reasoning, 5):
        deltas.append({"content": _content("", parts), "reasoning_content": piece})
    for piece in _pieces(answer.text, 4):
        deltas.append({"content": _content(piece, parts)})
    for index, c in enumerate(answer.calls):
        for n, piece in enumerate(_pieces(c["arguments"], 6) or [""]):
            function = {"name": c["name"], "arguments": piece} if n == 0 else {"arguments": piece}
            fragment = {
                "index": index,
                "id": c["id"] if n == 0 else "",
                "type": "function",
                "function": function,
            }
            deltas.append({"content": _content("", parts), "tool_calls": [fragment]})
    final = {"content": _content("", parts)}
    for n, delta in enumerate([*deltas, final], start=1):
        last = n == len(deltas) + 1
        yield {
            "output": {
                "choices": [
                    {
                        "message": {**delta, "role": "assistant"},
                        "finish_reason": answer.finish_reason if last else "null",
                    }
                ]
            },
            **_usage(answer.usage, last=last, n=n),
            "request_id": request_id,
        }


def frame(n: int, data: dict[str, Any], *, event: str = "result", status: int = 200) -> bytes:
    return f"id:{n}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{json.dumps(data)}\n".encode()


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message, "request_id": _request_id()}


# -- checking requests like the service ---------------------------------------------------------
def validate_request(body: dict[str, Any], *, multimodal: bool, sse: bool) -> None:
    """Raise AssertionError with the service's complaint if it would refuse ``body``."""
    assert isinstance(body.get("model"), str) and body["model"], "Model not specified"
    messages = (body.get("input") or {}).get("messages")
    assert isinstance(messages, list) and messages, "Input messages must not be empty"
    parameters = body.get("parameters") or {}
    assert parameters.get("result_format") == "message", "the fake answers result_format message"
    if sse:
        assert parameters.get("incremental_output") is True, "the fake streams incrementally only"
    calls: set[str] = set()  # ids of the last assistant message's tool calls, not yet answered
    for n, msg in enumerate(messages):
        role = msg.get("role")
        assert role in ("system", "user", "assistant", "tool"), f"messages[{n}]: bad role {role}"
        content = msg.get("content")
        if multimodal:
            assert isinstance(content, list), f"messages[{n}].content must be an array"
            for part in content:
                assert isinstance(part, dict) and len(part) == 1, f"messages[{n}]: bad part {part}"
                key, value = next(iter(part.items()))
                assert key in PART_KEYS and isinstance(value, str), f"messages[{n}]: bad {part}"
                if key != "text":
                    _check_media(value)
        else:
            assert isinstance(content, str), f"messages[{n}].content must be a string"
        if role in ("system", "user"):
            assert content, f"messages[{n}]: content must not be empty"
        if role == "tool":
            assert msg.get("tool_call_id") in calls, (
                f"messages[{n}]: tool_call_id {msg.get('tool_call_id')!r} answers no tool call"
            )
            calls.discard(msg["tool_call_id"])
            continue
        assert not calls, f"messages[{n}]: tool calls {sorted(calls)} have no tool message"
        for c in msg.get("tool_calls") or ():
            assert role == "assistant", f"messages[{n}]: tool_calls belong to the assistant"
            assert c["type"] == "function" and c["id"], f"messages[{n}]: bad tool call {c}"
            assert isinstance(c["function"]["arguments"], str), "arguments must be a string"
            calls.add(c["id"])
    names = set()
    for tool in parameters.get("tools") or ():
        assert tool["type"] == "function" and tool["function"]["name"], f"bad tool {tool}"
        assert isinstance(tool["function"].get("parameters"), dict), f"bad tool {tool}"
        names.add(tool["function"]["name"])
    choice = parameters.get("tool_choice")
    if isinstance(choice, dict):
        assert choice["type"] == "function" and choice["function"]["name"] in names, choice
    else:
        assert choice in (None, "auto", "none"), f"bad tool_choice {choice!r}"
    response_format = parameters.get("response_format")
    if response_format == {"type": "json_object"}:
        text = json.dumps([m["content"] for m in messages], ensure_ascii=False)
        assert "json" in text.lower(), JSON_MODE_ERROR


def _check_media(value: str) -> None:
    if value.startswith(("http://", "https://")):
        return
    head, sep, data = value.partition(";base64,")
    assert head.startswith("data:") and sep, f"media must be a URL or a data URL: {value[:40]}"
    base64.b64decode(data, validate=True)


# -- the server ---------------------------------------------------------------------------------
class FakeDashScope(FakeServer):
    """Answers with the scripted replies in order (``Answer("ok")`` once they run out).
    ``key``: the key it expects; ``blank_lines=False`` frames the stream without blank lines
    between events (DashScope's own client copes with both)."""

    routes = (TEXT_PATH, MULTIMODAL_PATH)

    def __init__(self, *replies: Reply, key: str = "", blank_lines: bool = True) -> None:
        super().__init__(*replies)
        self.key = key
        self.blank_lines = blank_lines

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        sse = request.headers.get("X-DashScope-SSE") == "enable"
        multimodal = request.path == MULTIMODAL_PATH
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.key and given != self.key:
            return await self.error(
                request, Failure(401, "InvalidApiKey", "Invalid API-key provided."), sse
            )
        try:
            validate_request(body, multimodal=multimodal, sse=sse)
        except AssertionError as exc:
            return await self.error(request, Failure(400, "InvalidParameter", str(exc)), sse)
        reply = self.next_reply(Answer("ok"))
        if isinstance(reply, Failure):
            return await self.error(request, reply, sse, given)
        if not sse:
            assert isinstance(reply, Answer), "a broken reply needs a streaming request"
            return web.json_response(answer_body(reply, multimodal))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream;charset=UTF-8",
                "x-dashscope-call-gateway": "true",
            }
        )
        await response.prepare(request)
        answer = reply.answer if isinstance(reply, Broken) else reply
        for n, data in enumerate(events(answer, multimodal), start=1):
            if isinstance(reply, Broken) and n > reply.after:
                if reply.code is None:
                    if reply.midway:
                        await response.write(frame(n, data)[:40])
                else:
                    error = error_body(reply.code, reply.message)
                    await response.write(
                        self.framed(frame(n, error, event="error", status=reply.status))
                    )
                break
            await response.write(self.framed(frame(n, data)))
        await response.write_eof()
        return response

    def framed(self, raw: bytes) -> bytes:
        return raw + b"\n" if self.blank_lines else raw

    async def error(
        self, request: web.Request, failure: Failure, sse: bool, key: str = ""
    ) -> web.StreamResponse:
        """DashScope's error answer: JSON, or an SSE error event when a stream was asked for."""
        data = error_body(failure.code, failure.message.replace("{key}", key))
        if not sse:
            return web.json_response(data, status=failure.status, headers=failure.headers)
        raw = self.framed(frame(1, data, event="error", status=failure.status))
        return web.Response(
            body=raw,
            status=failure.status,
            headers={"Content-Type": "text/event-stream;charset=UTF-8", **failure.headers},
        )
