"""``dashscope:<model>``: Qwen through DashScope's native generation API (JSON, or SSE with
``X-DashScope-SSE: enable``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from aopkit.blocks import Block, TextBlock, ToolUseBlock
from aopkit.errors import AopkitError
from aopkit.formatting import with_instruction
from aopkit.http import HTTPChatModel, Request, error_for_status, stream_object
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
    reported_count,
    reported_text,
    reported_tokens,
    require_messages,
    thinking,
)

if TYPE_CHECKING:
    from aopkit import Kernel, Msg

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com"
TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
# Qwen-VL's inputs; Qwen-Omni also takes audio (declare it with ``capabilities=``).
MULTIMODAL = Capabilities(thinking=True, media=frozenset({"image", "video"}))
REQUIRED = "You must answer by calling one of the tools you are given; do not answer in text."
StructuredMode = Literal["json_object", "json_schema"]


class DashScopeModel(HTTPChatModel):
    """Qwen over DashScope. ``multimodal=True`` is for Qwen-VL / Qwen-Omni models: it declares
    media and uses the multimodal endpoint. Generation parameters (``temperature``,
    ``max_tokens``, ``enable_thinking``...) go in ``extra_body={"parameters": {...}}``."""

    provider = "dashscope"
    default_base_url = DEFAULT_BASE_URL
    env_prefix = "DASHSCOPE"
    formatter_name = "dashscope"
    capabilities = Capabilities(media=frozenset(), thinking=True)

    def __init__(
        self,
        model: str,
        *,
        kernel: Kernel,
        multimodal: bool = False,
        structured_mode: StructuredMode = "json_object",
        **options: Any,
    ) -> None:
        if multimodal and options.get("capabilities") is None:
            options["capabilities"] = MULTIMODAL
        super().__init__(model, kernel=kernel, **options)
        if structured_mode not in ("json_object", "json_schema"):
            raise AopkitError(
                f"structured_mode must be 'json_object' or 'json_schema', not {structured_mode!r}"
            )
        self.structured_mode = structured_mode

    @property
    def path(self) -> str:
        """Models that take media answer on the multimodal endpoint, the others on the text one."""
        return MULTIMODAL_PATH if self.capabilities.media else TEXT_PATH

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
        data = await self.request(self.path, payload).send()
        choice = _choice(data)
        if choice is None:
            raise ModelUnavailable(self.name, f"unexpected answer: {str(data)[:200]}")
        message = choice.get("message") or {}
        content: list[Block] = []
        if reasoning := message.get("reasoning_content"):
            content.append(thinking(reasoning))
        if text := _text(message.get("content")):
            content.append(TextBlock(text))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            content.append(
                _tool_use(call.get("id"), function.get("name"), function.get("arguments"))
            )
        usage = _usage(data.get("usage") or {}, time.perf_counter() - started)
        return ChatResponse(
            content, usage, _finish(choice.get("finish_reason")), data.get("request_id")
        )

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
        request = self.request(self.path, payload)
        request.headers.update({"X-DashScope-SSE": "enable", "Accept": "text/event-stream"})
        stream = _Stream()
        async for event in self._events(request):
            if stream.feed(event) and stream.finish is None:
                yield stream.response()
        if stream.finish is None:
            raise ModelUnavailable(self.name, "stream cut before its last event (no finish_reason)")
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
        parameters: dict[str, Any] = {"result_format": "message"}
        if stream:
            parameters["incremental_output"] = True  # fragments, not the whole text each time
        if tools:
            parameters["tools"] = [_tool(s) for s in tools]
            parameters["parallel_tool_calls"] = self.capabilities.parallel_tool_calls
            if tool_choice == "required" and len(tools) > 1:
                # DashScope forces one named tool or none: "any tool" is asked for in words.
                messages = with_instruction(messages, REQUIRED)
                parameters["tool_choice"] = "auto"
            elif tool_choice == "required":
                parameters["tool_choice"] = _named(tools[0].name)
            elif tool_choice in ("auto", "none"):
                parameters["tool_choice"] = tool_choice
            elif tool_choice is not None:
                parameters["tool_choice"] = _named(tool_choice)
        elif tool_choice == "required":
            raise ModelRejected(self.name, "tool_choice 'required' needs at least one tool")
        if structured is not None:
            if self.structured_mode == "json_schema":
                schema = {"name": "answer", "schema": dict(structured), "strict": True}
                parameters["response_format"] = {"type": "json_schema", "json_schema": schema}
            else:
                # JSON mode guarantees JSON, not the schema: the schema goes in the prompt (which
                # must say "JSON" for DashScope to accept the mode).
                parameters["response_format"] = {"type": "json_object"}
                messages = with_instruction(messages, _schema_instruction(structured))
        history = (await self.format(messages))["messages"]
        require_messages(self.name, history)
        return {"model": self.model, "input": {"messages": history}, "parameters": parameters}

    async def _events(self, request: Request) -> AsyncIterator[dict[str, Any]]:
        """The JSON ``data`` of each SSE event. Read line by line, as DashScope's own client
        does: one ``data:`` line is one event, with or without blank lines between events."""
        kind, status = "result", 200
        async for raw in request.lines():
            if not raw.endswith(b"\n"):
                raise ModelUnavailable(self.name, f"stream cut mid-event: {raw[:120]!r}")
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith(":HTTP_STATUS/"):
                code = line[13:].strip()
                status = int(code) if code.isdigit() else 500
            elif line.startswith("data:"):
                data = line[5:]
                if kind == "error":
                    raise error_for_status(
                        self.name, status if status >= 400 else 500, {}, data, self.kernel.secrets
                    )
                yield stream_object(data, self.name)
            elif not line:
                kind, status = "result", 200


def _tool(spec: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def _schema_instruction(schema: Mapping[str, Any]) -> str:
    return (
        "Answer with one JSON object and nothing else. It must conform to this JSON schema:\n"
        + json.dumps(schema, ensure_ascii=False)
    )


def _choice(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first choice of an answer or a stream event; None when it has none that is usable
    (``output`` or ``choices`` missing, null, or of another shape)."""
    output = data.get("output")
    choices = output.get("choices") if isinstance(output, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def _text(content: Any) -> str:
    """Text of a message: a string (text models) or ``[{"text": ...}]`` (multimodal ones)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _finish(reason: Any) -> str | None:
    """DashScope says ``"null"`` (a string) while the answer is still coming."""
    return None if reason in (None, "", "null") else str(reason)


def _tool_use(call_id: Any, name: Any, arguments: Any) -> ToolUseBlock:
    return parse_tool_arguments(call_id or f"call_{new_id()}", name or "", arguments)


def _usage(usage: Any, seconds: float) -> Usage:
    usage = usage if isinstance(usage, Mapping) else {}
    return Usage(
        input_tokens=reported_tokens(usage.get("input_tokens")),
        output_tokens=reported_tokens(usage.get("output_tokens")),
        cached_input_tokens=reported_count(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=reported_count(usage, "output_tokens_details", "reasoning_tokens"),
        seconds=seconds,
    )


class _Stream:
    """Assembles incremental SSE events into cumulative responses. Tool calls come as
    fragments keyed by ``index``: the first has the id and name, the rest add argument text."""

    def __init__(self) -> None:
        self.thinking = ""
        self.text = ""
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.id: str | None = None

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take one event; True when the visible text changed."""
        self.id = reported_text(event.get("request_id")) or self.id
        self.usage = event.get("usage") or self.usage
        choice = _choice(event)
        if choice is None:
            return False
        message = choice.get("message") or {}
        before = len(self.thinking) + len(self.text)
        self.thinking += message.get("reasoning_content") or ""
        self.text += _text(message.get("content"))
        for call in message.get("tool_calls") or ():
            self._call(call)
        self.finish = _finish(choice.get("finish_reason")) or self.finish
        return len(self.thinking) + len(self.text) != before

    def _call(self, call: Mapping[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):  # no index: a new id opens a call, no id continues one
            last = self.calls.get(len(self.calls) - 1)
            same = last is not None and call.get("id") in (None, "", last["id"])
            index = len(self.calls) - 1 if same else len(self.calls)
        slot = self.calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        function = call.get("function") or {}
        slot["id"] = call.get("id") or slot["id"]
        slot["name"] = function.get("name") or slot["name"]
        slot["arguments"] += function.get("arguments") or ""

    def response(self) -> ChatResponse:
        """What has come so far; tool calls are added once their arguments are complete."""
        content: list[Block] = []
        if self.thinking:
            content.append(thinking(self.thinking))
        if self.text:
            content.append(TextBlock(self.text))
        return ChatResponse(content, id=self.id)

    def final(self, seconds: float) -> ChatResponse:
        content = self.response().content
        for index in sorted(self.calls):
            call = self.calls[index]
            content.append(_tool_use(call["id"], call["name"], call["arguments"]))
        return ChatResponse(content, _usage(self.usage, seconds), self.finish, self.id)
