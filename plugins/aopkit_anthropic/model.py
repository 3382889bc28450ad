"""``anthropic:<model>``: the Anthropic Messages API (``POST /v1/messages``, JSON or SSE)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from aopkit.blocks import Block, TextBlock, ThinkingBlock, ToolUseBlock, UnknownBlock
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
    reported_text,
    reported_tokens,
    require_messages,
    thinking,
)
from aopkit.secret import Secret, redact

from .formatter import NATIVE

if TYPE_CHECKING:
    from aopkit import Kernel, Msg

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
PATH = "/v1/messages"
ANSWER_TOOL = "structured_output"  # the forced tool whose arguments are the structured answer
# Error types of stream ``error`` events worth retrying (their HTTP twins are 429 and 5xx).
RETRYABLE_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}


class AnthropicModel(HTTPChatModel):
    """Claude over the Messages API. ``max_tokens`` is required by the API, hence a default;
    other request fields (``thinking``, ``stop_sequences``...) go in ``extra_body``."""

    provider = "anthropic"
    default_base_url = DEFAULT_BASE_URL
    env_prefix = "ANTHROPIC"
    formatter_name = "anthropic"
    capabilities = Capabilities(media=frozenset({"image"}), thinking=True)

    def __init__(self, model: str, *, kernel: Kernel, max_tokens: int = 4096, **options: Any):
        super().__init__(model, kernel=kernel, **options)
        self.max_tokens = int(max_tokens)

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key.reveal()
        return headers

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
        content: list[Block] = []
        answer = None
        for item in data.get("content") or ():
            if structured is not None and _is_answer(item):
                answer = len(content)
                content.append(TextBlock(json.dumps(item.get("input"), ensure_ascii=False)))
            else:
                content.append(_block(item))
        content, finish = _settle(content, data.get("stop_reason"), answer)
        usage = _usage(data.get("usage") or {}, time.perf_counter() - started)
        return ChatResponse(content, usage, finish, data.get("id"), data.get("model"))

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
        stream = _Stream(structured is not None)
        async for _, data in sse_events(self.request(PATH, {**payload, "stream": True}).lines()):
            event = stream_object(data, self.name)
            if event.get("type") == "error":
                raise _stream_error(self.name, data, event, self.api_key)
            if stream.feed(event):
                yield stream.response()
        if not stream.stopped:
            raise ModelUnavailable(self.name, "stream cut before message_stop")
        yield stream.final(time.perf_counter() - started)

    async def _payload(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if structured is not None and structured.get("type") != "object":
            raise ModelRejected(
                self.name,
                "structured output goes through a forced tool, whose schema must be an "
                "object (type: object) at the root; wrap the value in an object",
            )
        payload: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens}
        payload.update(await self.format(messages))
        require_messages(self.name, payload["messages"])
        specs = [_tool(s.name, s.description, s.parameters) for s in tools]
        choice: dict[str, Any] | None = None
        if tool_choice is not None:
            kind = TOOL_CHOICES.get(tool_choice)
            choice = {"type": kind} if kind else {"type": "tool", "name": tool_choice}
        if structured is not None:
            specs.append(_tool(ANSWER_TOOL, "Give your answer as this tool's input.", structured))
            # The API refuses forced tool use while extended thinking is on.
            forced = {"type": "tool", "name": ANSWER_TOOL, "disable_parallel_tool_use": True}
            choice = {"type": "auto"} if self._thinking() else forced
        if not specs:
            if tool_choice == "required":
                raise ModelRejected(self.name, "tool_choice 'required' needs at least one tool")
            return payload
        payload["tools"] = specs
        if not self.capabilities.parallel_tool_calls:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice is not None:
            payload["tool_choice"] = choice
        return payload

    def _thinking(self) -> bool:
        thinking = self.extra_body.get("thinking")
        return isinstance(thinking, Mapping) and thinking.get("type") != "disabled"


def _tool(name: str, description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name, "input_schema": dict(schema)}
    if description:
        tool["description"] = description
    return tool


def _is_answer(item: Mapping[str, Any]) -> bool:
    return item.get("type") == "tool_use" and item.get("name") == ANSWER_TOOL


def _block(item: Mapping[str, Any]) -> Block:
    """A block of the answer; unknown kinds (server tools) are kept to be sent back as is."""
    kind = item.get("type")
    if kind == "text":
        return TextBlock(item.get("text") or "")
    if kind == "thinking":
        return thinking(item.get("thinking") or "", signature=item.get("signature"))
    if kind == "redacted_thinking":
        return ThinkingBlock("", extra={"data": item.get("data")})
    if kind == "tool_use":
        return parse_tool_arguments(item.get("id") or "", item.get("name") or "", item.get("input"))
    return UnknownBlock(str(kind), fields=dict(item), extra={"provider": NATIVE})


def _settle(
    content: list[Block], finish: str | None, answer: int | None
) -> tuple[list[Block], str | None]:
    """With a structured answer at index ``answer``, ``response.text`` must be that JSON alone:
    other text is left out, and the forced call is not reported as a tool call."""
    if answer is None:
        return content, finish
    kept = [b for i, b in enumerate(content) if i == answer or not isinstance(b, TextBlock)]
    if finish == "tool_use" and not any(isinstance(b, ToolUseBlock) for b in kept):
        finish = "end_turn"
    return kept, finish


def _reported(usage: Any) -> dict[str, Any]:
    """The counts a usage object holds (none if it is not an object; nulls left out)."""
    items = usage.items() if isinstance(usage, Mapping) else ()
    return {k: v for k, v in items if v is not None}


def _usage(usage: Any, seconds: float) -> Usage:
    """Input tokens include those read from or written to the prompt cache, which Anthropic
    counts apart."""
    usage = usage if isinstance(usage, Mapping) else {}
    return Usage(
        input_tokens=reported_tokens(
            usage.get("input_tokens"),
            usage.get("cache_read_input_tokens"),
            usage.get("cache_creation_input_tokens"),
        ),
        output_tokens=reported_tokens(usage.get("output_tokens")),
        seconds=seconds,
        cached_input_tokens=reported_tokens(usage.get("cache_read_input_tokens")),
        cache_write_tokens=reported_tokens(usage.get("cache_creation_input_tokens")),
    )


def _stream_error(
    model: str, data: str, event: Mapping[str, Any], key: Secret | None
) -> ModelError:
    error = event.get("error")
    kind = error.get("type") if isinstance(error, Mapping) else None
    message = redact(provider_message(data), key)
    if kind in RETRYABLE_ERRORS:
        return ModelUnavailable(model, message)
    return ModelRejected(model, message)


class _Stream:
    """Assembles the SSE events of one answer into cumulative responses."""

    def __init__(self, structured: bool) -> None:
        self.structured = structured
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None
        self.stopped = False
        self.blocks: dict[int, Block] = {}  # by the events' block index
        self.open: dict[int, dict[str, Any]] = {}  # content_block_start payloads, grown by deltas
        self.answer: int | None = None  # index of the forced structured-output tool call

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take one event; True when the visible content changed."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = reported_text(message.get("id"))
            self.model = reported_text(message.get("model"))
            self.usage.update(_reported(message.get("usage")))
        elif kind == "content_block_start":
            return self._start(event["index"], dict(event["content_block"]))
        elif kind == "content_block_delta":
            return self._delta(event["index"], event.get("delta") or {})
        elif kind == "content_block_stop":
            return self._stop(event["index"])
        elif kind == "message_delta":
            self.finish = (event.get("delta") or {}).get("stop_reason") or self.finish
            self.usage.update(_reported(event.get("usage")))
        elif kind == "message_stop":
            self.stopped = True
        return False  # ping, and event types added later

    def _start(self, index: int, block: dict[str, Any]) -> bool:
        self.open[index] = block
        if "input" in block:  # a tool call: its arguments come as JSON fragments
            block["json"] = ""
            if self.structured and _is_answer(block):
                self.answer = index
                self.blocks[index] = TextBlock("")
            return False
        self.blocks[index] = _block(block)
        # Text and thinking start empty and grow; other blocks come whole.
        return block.get("type") not in ("text", "thinking") or bool(
            block.get("text") or block.get("thinking")
        )

    def _delta(self, index: int, delta: Mapping[str, Any]) -> bool:
        block = self.open[index]
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":  # kept, but nothing new to show
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
            self.blocks[index] = _block(block)
            return False
        elif kind == "input_json_delta":
            block["json"] = block.get("json", "") + delta.get("partial_json", "")
            if index == self.answer:
                self.blocks[index] = TextBlock(block["json"])
                return True
            return False
        else:
            return False  # citations and later delta types
        self.blocks[index] = _block(block)
        return True

    def _stop(self, index: int) -> bool:
        block = self.open.pop(index, None)
        if block is None or "json" not in block:
            return False
        raw = block.pop("json")
        if index == self.answer:
            self.blocks[index] = TextBlock(raw or "{}")
        elif block.get("type") == "tool_use":
            self.blocks[index] = parse_tool_arguments(block.get("id") or "", block["name"], raw)
        else:  # a server tool call: its input assembled as the API would have sent it whole
            try:
                block["input"] = json.loads(raw) if raw else block.get("input", {})
            except (ValueError, RecursionError):
                block["input"] = raw
            self.blocks[index] = _block(block)
        return True

    def response(self) -> ChatResponse:
        blocks = [self.blocks[i] for i in sorted(self.blocks)]
        return ChatResponse(blocks, id=self.id, model=self.model)

    def final(self, seconds: float) -> ChatResponse:
        order = sorted(self.blocks)
        content = [self.blocks[i] for i in order]
        answer = None if self.answer is None else order.index(self.answer)
        content, finish = _settle(content, self.finish, answer)
        return ChatResponse(content, _usage(self.usage, seconds), finish, self.id, self.model)
