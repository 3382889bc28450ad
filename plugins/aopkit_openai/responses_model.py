"""``openai-responses:<model>``: OpenAI's Responses API (``POST {base_url}/responses``, JSON, or
SSE whose semantic events end with ``response.completed``, ``response.incomplete`` or
``response.failed``; there is no ``[DONE]``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from aopkit.blocks import Block, TextBlock, UnknownBlock
from aopkit.http import HTTPChatModel, provider_message, sse_events, stream_object
from aopkit.models import (
    Capabilities,
    ChatResponse,
    ModelError,
    ModelRejected,
    ModelUnavailable,
    ToolChoice,
    ToolSpec,
    Usage,
    parse_tool_arguments,
    reported_count,
    reported_tokens,
    require_messages,
    thinking,
)
from aopkit.secret import Secret, redact

from .model import DEFAULT_BASE_URL, SCHEMA_NAME, TOOL_MODES
from .responses_formatter import ITEM_ID, NATIVE, REASONING, ResponsesFormatter

if TYPE_CHECKING:
    from aopkit import Kernel, Msg

PATH = "/responses"
ENCRYPTED_REASONING = "reasoning.encrypted_content"
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Delta events that grow a part of an output item: the item's list of parts, the event's index
# into it, and the type and growing field of a part.
GROWING = {
    "response.output_text.delta": ("content", "content_index", "output_text", "text"),
    "response.refusal.delta": ("content", "content_index", "refusal", "refusal"),
    "response.reasoning_summary_text.delta": ("summary", "summary_index", "summary_text", "text"),
    "response.reasoning_text.delta": ("content", "content_index", "reasoning_text", "text"),
}
# Error codes of failed responses and ``error`` events worth retrying (their HTTP twins are 429
# and 5xx); any other code names the request or its content as the fault.
RETRYABLE_CODES = frozenset(
    {"server_error", "rate_limit_exceeded", "vector_store_timeout", "overloaded", "timeout"}
)


class OpenAIResponsesModel(HTTPChatModel):
    """A model behind the Responses API. Stateless by default (``store=False``): the kernel
    keeps the conversation, so reasoning comes back encrypted (``include``) and is sent back
    that way. Declare ``capabilities`` without ``thinking`` for a model that does not reason
    (the API refuses ``include`` of encrypted reasoning there). Other request fields
    (``reasoning``, ``max_output_tokens``, ``text.verbosity``...) go in ``extra_body``."""

    provider = "openai-responses"
    default_base_url = DEFAULT_BASE_URL
    env_prefix = "OPENAI"
    formatter_name = "openai-responses"
    capabilities = Capabilities(structured_output=True, media=frozenset({"image"}), thinking=True)

    def __init__(self, model: str, *, kernel: Kernel, store: bool = False, **options: Any):
        super().__init__(model, kernel=kernel, **options)
        self.store = bool(store)
        if isinstance(self.formatter, ResponsesFormatter):
            self.formatter = self.formatter.configured(stored=self.store)

    async def _complete(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        started = time.perf_counter()
        payload = await self._payload(messages, tools, tool_choice, structured)
        data = await self.request(PATH, payload).send()
        if not isinstance(data.get("output"), list):
            if isinstance(data.get("error"), Mapping):
                raise _error(self.name, data["error"], self.api_key)
            raise ModelUnavailable(self.name, f"unexpected answer: {str(data)[:200]}")
        if data.get("status") == "failed":
            raise _error(self.name, _mapping(data.get("error")), self.api_key)
        return _answer(data, time.perf_counter() - started)

    async def _stream(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        started = time.perf_counter()
        payload = await self._payload(messages, tools, tool_choice, structured)
        stream = _Stream()
        async for _, data in sse_events(self.request(PATH, {**payload, "stream": True}).lines()):
            if stream.done or data == "[DONE]":
                continue  # nothing comes after the last event; read on to release the connection
            event = stream_object(data, self.name)
            kind = event.get("type")
            if kind == "error":
                # The API's own event is the error (its type is the event's); some servers nest it.
                error = event.get("error")
                if not isinstance(error, Mapping):
                    error = {k: v for k, v in event.items() if k != "type"}
                raise _error(self.name, error, self.api_key)
            if kind == "response.failed":
                failed = _mapping(event.get("response")).get("error")
                raise _error(self.name, _mapping(failed), self.api_key)
            if stream.feed(event):
                yield stream.response()
        if stream.final is None:
            raise ModelUnavailable(self.name, "stream cut before response.completed")
        yield stream.answer(time.perf_counter() - started)

    async def _payload(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "store": self.store}
        payload.update(await self.format(messages))
        require_messages(self.name, payload["input"])
        if not self.store and self.capabilities.thinking:
            payload["include"] = [ENCRYPTED_REASONING]
        if structured is not None:
            schema = {"type": "json_schema", "name": SCHEMA_NAME, "schema": dict(structured)}
            payload["text"] = {"format": schema}
        if not tools:
            if tool_choice == "required":
                raise ModelRejected(self.name, "tool_choice 'required' needs at least one tool")
            return payload
        payload["tools"] = [_tool(spec) for spec in tools]
        if tool_choice is not None:
            payload["tool_choice"] = (
                tool_choice
                if tool_choice in TOOL_MODES
                else {"type": "function", "name": tool_choice}
            )
        if not self.capabilities.parallel_tool_calls:
            payload["parallel_tool_calls"] = False
        return payload


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is an object, else an empty one (servers send nulls, or worse)."""
    return value if isinstance(value, Mapping) else {}


def _tool(spec: ToolSpec) -> dict[str, Any]:
    """A function tool. ``strict`` is sent as false: the API's default (true) would demand
    schemas with every property required and no additional properties."""
    tool: dict[str, Any] = {
        "type": "function",
        "name": spec.name,
        "parameters": dict(spec.parameters),
        "strict": False,
    }
    if spec.description:
        tool["description"] = spec.description
    return tool


def _blocks(item: Mapping[str, Any]) -> list[Block]:
    """The blocks of one output item; kinds this plugin does not know (server-side tools)
    are kept whole, to be sent back as they came."""
    kind = item.get("type")
    item_id = _text(item.get("id"))
    extra = {ITEM_ID: item_id} if item_id else {}
    if kind == "message":
        out: list[Block] = []
        for part in _list(item.get("content")):
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "output_text" and (text := _text(part.get("text"))):
                out.append(TextBlock(text, extra=dict(extra)))
            elif part.get("type") == "refusal" and (text := _text(part.get("refusal"))):
                out.append(TextBlock(text, extra={**extra, "refusal": True}))
        return out
    if kind == "function_call":
        arguments = item.get("arguments")
        if not isinstance(arguments, (str, Mapping)):
            arguments = None
        call_id, name = _text(item.get("call_id")), _text(item.get("name"))
        return [parse_tool_arguments(call_id, name, arguments, extra)]
    if kind == "reasoning":
        kept = {k: v for k, v in item.items() if v is not None}
        return [thinking(_reasoning_text(item), **{REASONING: kept})]
    if not isinstance(kind, str) or not kind:
        return []  # not an item at all
    return [UnknownBlock(kind, fields=dict(item), extra={"provider": NATIVE})]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _reasoning_text(item: Mapping[str, Any]) -> str:
    """What a reasoning item shows: its summaries, else its reasoning text (open models)."""
    for key in ("summary", "content"):
        texts = [_text(p.get("text")) for p in _list(item.get(key)) if isinstance(p, Mapping)]
        if any(texts):
            return "\n\n".join(t for t in texts if t)
    return ""


def _finish(response: Mapping[str, Any]) -> str | None:
    """The API's own word: ``completed``, or why the answer is incomplete
    (``max_output_tokens``: a cut-off; ``content_filter``)."""
    details = response.get("incomplete_details")
    if isinstance(details, Mapping) and details.get("reason"):
        return str(details["reason"])
    status = response.get("status")
    return status if isinstance(status, str) else None


def _usage(usage: Any, seconds: float) -> Usage:
    """Cached input and reasoning tokens are already inside the input and output counts."""
    usage = usage if isinstance(usage, Mapping) else {}
    return Usage(
        input_tokens=reported_tokens(usage.get("input_tokens")),
        output_tokens=reported_tokens(usage.get("output_tokens")),
        seconds=seconds,
        cached_input_tokens=reported_count(usage, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=reported_count(usage, "output_tokens_details", "reasoning_tokens"),
    )


def _answer(response: Mapping[str, Any], seconds: float) -> ChatResponse:
    content = [
        b
        for item in _list(response.get("output"))
        if isinstance(item, Mapping)
        for b in _blocks(item)
    ]
    usage = _usage(response.get("usage"), seconds)
    return ChatResponse(
        content, usage, _finish(response), response.get("id"), response.get("model")
    )


def _error(model: str, error: Mapping[str, Any], key: Secret | None) -> ModelError:
    """A failed response or an ``error`` event: overload and server errors, and errors that
    name no cause, are retried; one whose code names the request or its content (an invalid
    prompt or image, a policy) is rejected."""
    message = redact(provider_message(json.dumps({"error": dict(error)})), key)
    code = error.get("code") or error.get("type")
    if code is None or code in RETRYABLE_CODES:
        return ModelUnavailable(model, message)
    return ModelRejected(model, message)


class _Stream:
    """Assembles the events of one streamed answer: output items by ``output_index``, grown
    by text, refusal and reasoning deltas, replaced whole by ``response.output_item.done``.
    Function calls show when whole (their arguments come in fragments)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.items: dict[int, dict[str, Any]] = {}
        self.whole: set[int] = set()  # indices of items that are done
        self.final: Mapping[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.final is not None

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take one event; True when the visible content changed."""
        kind = _text(event.get("type"))  # a list or an object would not even hash
        if kind in ("response.created", "response.in_progress"):
            self.id = _text(_mapping(event.get("response")).get("id")) or self.id
            return False
        if kind in TERMINAL:
            self.final = _mapping(event.get("response"))
            return False
        index = event.get("output_index")
        if not isinstance(index, int):
            return False  # not an output item's event (or one added to the API later)
        if kind == "response.output_item.added":
            self.items[index] = dict(_mapping(event.get("item")))
            return False
        if kind == "response.output_item.done":
            self.items[index] = dict(_mapping(event.get("item")))
            self.whole.add(index)
            return True
        item = self.items.get(index)
        if item is None:
            return False  # a delta for an item never announced, or an event added later
        delta = event.get("delta")
        if not isinstance(delta, str) or not delta:
            return False
        if kind == "response.function_call_arguments.delta":
            item["arguments"] = _text(item.get("arguments")) + delta
            return False
        grows = GROWING.get(kind)
        if grows is None:
            return False
        key, at, part, field = grows
        return _grow(item, key, event.get(at, 0), part, field, delta)

    def response(self) -> ChatResponse:
        content = [
            block
            for i in sorted(self.items)
            if i in self.whole or self.items[i].get("type") != "function_call"
            for block in _blocks(self.items[i])
        ]
        return ChatResponse(content, id=self.id)

    def answer(self, seconds: float) -> ChatResponse:
        """The whole answer: the final response's output, or what the events built."""
        final = self.final or {}
        output = final.get("output")
        if not isinstance(output, list) or not output:
            output = [self.items[i] for i in sorted(self.items)]
        return _answer({**final, "output": output, "id": final.get("id") or self.id}, seconds)


def _grow(item: dict[str, Any], key: str, index: Any, kind: str, field: str, delta: str) -> bool:
    """Append ``delta`` to the ``field`` of part ``index`` of ``item[key]``."""
    parts = item.setdefault(key, [])
    if not isinstance(parts, list) or not isinstance(index, int) or index < 0:
        return False
    while len(parts) <= index:
        parts.append({"type": kind, field: ""})
    part = parts[index]
    if not isinstance(part, dict):
        return False
    part[field] = _text(part.get(field)) + delta
    return True
