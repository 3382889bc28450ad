"""OpenAI chat completions: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` names a served agent. With a conversation id (header ``X-Aopkit-Conversation`` or
``metadata.conversation``) the agent keeps its memory and only the last message is its input;
the earlier messages seed a conversation that has no memory yet (a fresh one, or one without
an id). The agent's own tool calls run on the server: they are not OpenAI tool calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

import aopkit
from aopkit import jsontext
from aopkit.blocks import Base64Source, Block, ImageBlock, TextBlock, URLSource
from aopkit.events import ReplyChunk
from aopkit.message import Role
from aopkit.models import Usage
from aopkit.usage import BudgetExceeded

from ._service import Conversation, ConversationBusy, InvalidConversation, Service, UnknownAgent

HEADER = "X-Aopkit-Conversation"
WATCH_SECONDS = 0.25  # how often a reply with nothing to send checks that its client is there
ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


class BadRequest(aopkit.AopkitError):
    """A request OpenAI's API would refuse with 400; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class TooLarge(BadRequest):
    """A body beyond the app's ``client_max_size``: 413, as for any oversized request."""


def setup(app: web.Application, service: Service) -> None:
    routes = _Routes(service)
    app.router.add_get("/v1/models", routes.models)
    app.router.add_get("/v1/models/{model}", routes.model)
    app.router.add_post("/v1/chat/completions", routes.completions)


class _Routes:
    def __init__(self, service: Service) -> None:
        self.service = service

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "aopkit"}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [self._model(n) for n in self.service.names()]}
        )

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self.service.names():
            return self._error(UnknownAgent(name, self.service.names()))
        return web.json_response(self._model(name))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _body(request)
            name = _model_name(body)
            self.service.describe(name)  # an unknown model: 404 before anything else
            history, last = _messages(body.get("messages"), name)
            stream, include_usage = _stream_options(body)
            conversation = request.headers.get(HEADER) or _metadata_conversation(body)
            if stream:
                return await self._stream(request, name, conversation, history, last, include_usage)
            async with self.service.conversation(conversation) as conv:
                work = asyncio.ensure_future(_seeded(conv, name, history)(last))
                with _cancelled_if_gone(request, work):
                    reply = await work
            return web.json_response(_completion(reply, name), headers={HEADER: conv.id})
        except aopkit.AopkitError as exc:
            return self._error(exc)
        except ConnectionResetError:
            return web.Response(status=499)  # no one is there to read it

    async def _stream(
        self,
        request: web.Request,
        name: str,
        conversation: str | None,
        history: list[aopkit.Msg],
        last: aopkit.Msg,
        include_usage: bool,
    ) -> web.StreamResponse:
        """The reply as server-sent chunks; ``[DONE]`` once the conversation is saved. A client
        that goes away cancels the reply; the conversation keeps the user's message (and any
        tool results, whole). A failure after the first chunk is an ``error`` event."""
        chunk = _chunker(f"chatcmpl-{last.id}", name, include_usage)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            async with self.service.conversation(conversation) as conv:
                agent = _seeded(conv, name, history)
                response.headers[HEADER] = conv.id
                await response.prepare(request)
                await _send(response, chunk({"role": "assistant", "content": ""}))
                reply = await _relay(request, response, conv, agent, last, chunk)
            await _send(response, chunk({}, "stop"))
            if include_usage:
                await _send(response, {**chunk({}), "choices": [], "usage": _usage(reply)})
            await response.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            pass  # the client left: its reply was cancelled, the conversation saved
        except aopkit.AopkitError as exc:
            if not response.prepared:
                return self._error(exc)
            with contextlib.suppress(ConnectionResetError):
                await _send(response, {"error": _error(self.service.kernel, exc)[1]})
        return response

    def _error(self, exc: aopkit.AopkitError) -> web.Response:
        status, body = _error(self.service.kernel, exc)
        return web.json_response({"error": body}, status=status)


def _seeded(conv: Conversation, name: str, history: list[aopkit.Msg]) -> aopkit.Agent:
    """The conversation's agent; a new conversation (nothing remembered) starts from the
    request's earlier messages."""
    agent = conv.agent(name)
    if not len(agent.memory):
        agent.memory.extend(history)
    return agent


async def _relay(
    request: web.Request,
    response: web.StreamResponse,
    conv: Conversation,
    agent: aopkit.Agent,
    last: aopkit.Msg,
    chunk: Callable[..., dict[str, Any]],
) -> aopkit.Msg:
    """Run the reply, sending its text as it grows, and return it."""
    text = _Text()
    async with conv.events() as events:
        work = asyncio.ensure_future(agent(last))  # in the block: its events come here
        with _cancelled_if_gone(request, work):
            async with contextlib.aclosing(events.during(work)) as seen:
                async for event in seen:
                    if not isinstance(event, ReplyChunk) or event.agent != agent.name:
                        continue
                    if delta := text.extend(event.text):
                        await _send(response, chunk({"content": delta}))
            reply: aopkit.Msg = await work
    if delta := text.extend(reply.text):
        await _send(response, chunk({"content": delta}))
    return reply


@contextlib.contextmanager
def _cancelled_if_gone(request: web.Request, work: asyncio.Future[Any]) -> Iterator[None]:
    """Cancel ``work`` if the client goes away, and say so with a ``ConnectionResetError``:
    whether or not the server cancels handlers of clients that left (aiohttp's
    ``handler_cancellation``), and also while nothing is written (a long tool call)."""
    watcher = asyncio.ensure_future(_cancel_when_gone(request, work))
    try:
        yield
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ConnectionResetError("the client went away") from None
        raise
    finally:
        watcher.cancel()


async def _cancel_when_gone(request: web.Request, work: asyncio.Future[Any]) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(WATCH_SECONDS)
    work.cancel()


def _error(kernel: aopkit.Kernel, exc: aopkit.AopkitError) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error object for ``exc`` (secrets scrubbed from the message)."""
    message = kernel.secrets.redact(str(exc))
    found: tuple[int, str, str | None, str | None]
    if isinstance(exc, UnknownAgent):
        found = (404, "invalid_request_error", "model", "model_not_found")
        message = f"The model {exc.name!r} does not exist: it is not a served agent"
    elif isinstance(exc, TooLarge):
        found = (413, "invalid_request_error", None, "request_too_large")
    elif isinstance(exc, (BadRequest, InvalidConversation)):
        found = (400, "invalid_request_error", getattr(exc, "param", None), None)
    elif isinstance(exc, ConversationBusy):
        found = (409, "invalid_request_error", None, "conversation_busy")
    elif isinstance(exc, BudgetExceeded):
        found = (429, "insufficient_quota", None, "insufficient_quota")
    else:
        found = (500, "server_error", None, None)
    status, kind, param, code = found
    return status, {"message": message, "type": kind, "param": param, "code": code}


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the request body is larger than {request.client_max_size} bytes") from None
    try:
        body = jsontext.loads(raw, unique_keys=True)
    except aopkit.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if body.get("tools") or body.get("functions"):
        raise BadRequest(
            "tools are not accepted: the agent's own tools run on the server", param="tools"
        )
    if body.get("n") not in (None, 1):
        raise BadRequest("only n=1 is supported", param="n")
    return body


def _model_name(body: dict[str, Any]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' must be the name of a served agent (GET /v1/models)", "model")
    return name


def _metadata_conversation(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be an object", "metadata")
    conversation = metadata.get("conversation")
    if conversation is not None and not isinstance(conversation, str):
        raise BadRequest("'metadata.conversation' must be a string", "metadata.conversation")
    return conversation


def _stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    include = options.get("include_usage") if isinstance(options, dict) else "not an object"
    if not (include is None or isinstance(include, bool)):
        raise BadRequest("'stream_options' must be {\"include_usage\": bool}", "stream_options")
    return stream, bool(include)


def _messages(given: Any, agent: str) -> tuple[list[aopkit.Msg], aopkit.Msg]:
    """The request's messages: those before the last, and the last (a user message)."""
    if not isinstance(given, list) or not given:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    messages = [_message(m, f"messages[{i}]", agent) for i, m in enumerate(given)]
    if messages[-1].role != "user":
        raise BadRequest("the last message must be the user's", f"messages[{len(given) - 1}]")
    return messages[:-1], messages[-1]


def _message(given: Any, where: str, agent: str) -> aopkit.Msg:
    if not isinstance(given, dict):
        raise BadRequest(f"{where} must be an object", where)
    role = ROLES.get(given.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise BadRequest(
            f"{where}.role must be one of {', '.join(ROLES)}, got {given.get('role')!r:.40} "
            "(tool calls run on the server, so tool messages have no place here)",
            f"{where}.role",
        )
    if given.get("tool_calls"):
        raise BadRequest(f"{where}: tool calls run on the server, not in the client", where)
    name = given.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise BadRequest(f"{where}.name must be a non-empty string", f"{where}.name")
    speaker = {"system": "system", "assistant": agent}.get(role, name or "user")
    return aopkit.Msg(speaker, _content(given.get("content"), f"{where}.content"), role)


def _content(given: Any, where: str) -> str | list[Block]:
    if isinstance(given, str):
        return given
    if not isinstance(given, list):
        raise BadRequest(f"{where} must be a string or an array of content parts", where)
    return [_part(part, f"{where}[{i}]") for i, part in enumerate(given)]


def _part(given: Any, where: str) -> Block:
    kind = given.get("type") if isinstance(given, dict) else None
    if kind == "text" and isinstance(given.get("text"), str):
        return TextBlock(given["text"])
    if kind == "image_url" and isinstance(given.get("image_url"), dict):
        url = given["image_url"].get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return ImageBlock(URLSource(url))
        if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
            media_type, data = url.removeprefix("data:").split(";base64,", 1)
            return ImageBlock(Base64Source(media_type, data))
        raise BadRequest(f"{where}.image_url.url must be an http(s) or base64 data URL", where)
    raise BadRequest(f"{where} must be a text or image_url part", where)


def _completion(reply: aopkit.Msg, name: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{reply.id}",
        "object": "chat.completion",
        "created": int(reply.timestamp),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(reply),
    }


def _usage(reply: aopkit.Msg) -> dict[str, Any] | None:
    """OpenAI's usage from the reply's, when the tokens are known (unknown is not zero)."""
    try:
        usage = Usage.of(reply)
    except aopkit.DecodeError:
        return None
    if usage is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    found: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    if usage.cached_input_tokens is not None:
        found["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    if usage.reasoning_tokens is not None:
        found["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return found


async def _send(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(f"data: {jsontext.dumps(data)}\n\n".encode())


def _chunker(completion_id: str, name: str, include_usage: bool) -> Callable[..., dict[str, Any]]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        made: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            made["usage"] = None
        return made

    return chunk


class _Text:
    """What has been streamed. ``ReplyChunk`` carries the text so far of one model call; a new
    call (after a tool step) starts a new paragraph, since what was sent cannot be taken back."""

    def __init__(self) -> None:
        self.sent = ""
        self.segment = ""

    def extend(self, text: str) -> str:
        if text.startswith(self.segment):
            delta = text[len(self.segment) :]
        else:
            delta = ("\n\n" if self.sent else "") + text
        self.segment = text
        self.sent += delta
        return delta
