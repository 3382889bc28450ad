"""``ollama:<model>``: a local (or proxied) Ollama server's ``/api/chat`` (JSON, or NDJSON when
streaming)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from aopkit.blocks import Block, TextBlock, ToolUseBlock
from aopkit.formatting import with_instruction
from aopkit.http import HTTPChatModel, ndjson
from aopkit.message import new_id
from aopkit.models import (
    Capabilities,
    ChatResponse,
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
from aopkit.secret import redact

if TYPE_CHECKING:
    from aopkit import Kernel, Msg

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
PATH = "/api/chat"
REQUIRED = "You must answer by calling one of the tools you are given; do not answer in text."


class OllamaModel(HTTPChatModel):
    """A model served by Ollama. No key is needed; one given (``OLLAMA_API_KEY``) is sent as a
    Bearer token, for proxies. ``think`` turns thinking on or off (``True``/``False``, or a
    level such as ``"high"`` for models that take one); other request fields (``options``,
    ``keep_alive``) go in ``extra_body``."""

    provider = "ollama"
    default_base_url = DEFAULT_BASE_URL
    env_prefix = "OLLAMA"
    formatter_name = "ollama"
    # Images go inline (Ollama takes no URLs); structured output is native (``format``).
    capabilities = Capabilities(
        structured_output=True, media=frozenset({"image"}), media_urls=False, thinking=True
    )

    def __init__(
        self, model: str, *, kernel: Kernel, think: bool | str | None = None, **options: Any
    ) -> None:
        super().__init__(model, kernel=kernel, **options)
        self.think = think

    async def _complete(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        started = time.perf_counter()
        payload = await self._payload(messages, tools, tool_choice, structured, stream=False)
        data = await self.request(PATH, payload).send()
        if not isinstance(data.get("message"), dict):
            raise ModelUnavailable(self.name, f"unexpected answer: {str(data)[:200]}")
        message = data["message"]
        content: list[Block] = []
        if message.get("thinking"):
            content.append(thinking(message["thinking"]))
        if message.get("content"):
            content.append(TextBlock(message["content"]))
        content += [_tool_use(call) for call in message.get("tool_calls") or ()]
        usage = _usage(data, time.perf_counter() - started)
        return ChatResponse(content, usage, data.get("done_reason"), model=data.get("model"))

    async def _stream(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        started = time.perf_counter()
        payload = await self._payload(messages, tools, tool_choice, structured, stream=True)
        stream = _Stream()
        async for event in ndjson(self.request(PATH, payload).lines(), self.name):
            if "error" in event:  # the model failed midway (the runner crashed, ran out of memory)
                raise ModelUnavailable(self.name, redact(str(event["error"]), self.api_key))
            if stream.feed(event) and not stream.done:
                yield stream.response()
        if not stream.done:
            raise ModelUnavailable(self.name, "stream cut before its last object (done: true)")
        yield stream.final(time.perf_counter() - started)

    async def _payload(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "stream": stream}
        if tool_choice == "required" and not tools:
            raise ModelRejected(self.name, "tool_choice 'required' needs at least one tool")
        # Ollama has no tool_choice: "none" offers no tools, a name offers that tool alone, and
        # a required call is asked for in words (the model may still answer in text).
        if tools and tool_choice != "none":
            offered = tools
            if tool_choice not in (None, "auto", "required"):
                offered = [t for t in tools if t.name == tool_choice]
            if tool_choice not in (None, "auto"):
                messages = with_instruction(messages, REQUIRED)
            payload["tools"] = [_tool(s) for s in offered]
        payload["messages"] = (await self.format(messages))["messages"]
        require_messages(self.name, payload["messages"])
        if structured is not None:
            payload["format"] = dict(structured)
        if self.think is not None:
            payload["think"] = self.think
        return payload


def _tool(spec: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def _tool_use(call: Mapping[str, Any]) -> ToolUseBlock:
    """Ollama sends whole calls with arguments as an object; older servers send no id, so one
    is made (results go back by tool name anyway)."""
    function = call.get("function") or {}
    call_id = call.get("id") or f"call_{new_id()}"
    return parse_tool_arguments(call_id, function.get("name") or "", function.get("arguments"))


def _usage(data: Mapping[str, Any], seconds: float) -> Usage:
    return Usage(
        input_tokens=reported_tokens(data.get("prompt_eval_count")),
        output_tokens=reported_tokens(data.get("eval_count")),
        seconds=seconds,
    )


class _Stream:
    """Assembles NDJSON objects into cumulative responses: text and thinking come in fragments,
    tool calls whole; the last object has ``done: true``, the reason and the token counts."""

    def __init__(self) -> None:
        self.thinking = ""
        self.text = ""
        self.calls: list[ToolUseBlock] = []
        self.done = False
        self.last: Mapping[str, Any] = {}
        self.model: str | None = None

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take one object; True when the visible content changed."""
        message = event.get("message") or {}
        self.model = self.model or reported_text(event.get("model"))
        before = (len(self.thinking), len(self.text), len(self.calls))
        self.thinking += message.get("thinking") or ""
        self.text += message.get("content") or ""
        self.calls += [_tool_use(call) for call in message.get("tool_calls") or ()]
        if event.get("done"):
            self.done, self.last = True, event
        return (len(self.thinking), len(self.text), len(self.calls)) != before

    def response(self) -> ChatResponse:
        content: list[Block] = []
        if self.thinking:
            content.append(thinking(self.thinking))
        if self.text:
            content.append(TextBlock(self.text))
        return ChatResponse([*content, *self.calls], model=self.model)

    def final(self, seconds: float) -> ChatResponse:
        content = self.response().content
        reason = self.last.get("done_reason")
        return ChatResponse(content, _usage(self.last, seconds), reason, model=self.model)
