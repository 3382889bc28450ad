"""``openai:<model>``: chat completions (``POST {base_url}/chat/completions``, JSON or SSE), from
OpenAI or any server that speaks the same API (vLLM, DeepSeek, llama.cpp server, LiteLLM...)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aopkit.blocks import Block, TextBlock, ThinkingBlock, ToolUseBlock
from aopkit.http import HTTPChatModel, provider_message, sse_events, stream_object
from aopkit.message import new_id
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
    reported_text,
    reported_tokens,
    require_messages,
)
from aopkit.secret import Secret, redact

from .formatter import OpenAIFormatter

if TYPE_CHECKING:
    from aopkit import Kernel, Msg

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PATH = "/chat/completions"
SCHEMA_NAME = "response"  # ``response_format.json_schema.name``: the API requires one
ANSWER_TOOL = "structured_output"  # the forced tool of servers without native structured output
TOOL_MODES = frozenset({"auto", "none", "required"})
DONE = "[DONE]"

Call = tuple[str, str, str]  # id, name, arguments text


class OpenAIModel(HTTPChatModel):
    """A chat-completions model. For an OpenAI-compatible server set ``base_url`` (a key is
    optional), declare what it does with ``capabilities=``, and ``strict=True`` if it takes
    string content only and no ``name``; ``send_reasoning=True`` sends thinking back as
    ``reasoning_content`` (DeepSeek requires it during tool-call turns)."""

    provider = "openai"
    default_base_url = DEFAULT_BASE_URL
    env_prefix = "OPENAI"
    formatter_name = "openai"
    capabilities = Capabilities(structured_output=True, media=frozenset({"image", "audio"}))

    def __init__(
        self,
        model: str,
        *,
        kernel: Kernel,
        strict: bool = False,
        send_reasoning: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(model, kernel=kernel, **options)
        self.strict = bool(strict)
        self.send_reasoning = bool(send_reasoning)
        if isinstance(self.formatter, OpenAIFormatter):
            self.formatter = self.formatter.configured(
                strict=self.strict, send_reasoning=self.send_reasoning
            )

    async def _complete(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        started = time.perf_counter()
        payload, forced = await self._payload(messages, tools, tool_choice, structured)
        data = await self.request(PATH, payload).send()
        choices = data.get("choices")
        if not choices or not isinstance(choices[0], dict):
            if isinstance(data.get("error"), Mapping):
                raise _error(self.name, json.dumps(data), data["error"], self.api_key)
            raise ModelUnavailable(self.name, f"unexpected answer: {str(data)[:200]}")
        message = choices[0].get("message") or {}
        calls = [
            (c.get("id") or "", (c.get("function") or {}).get("name") or "", _arguments(c))
            for c in message.get("tool_calls") or ()
        ]
        content, answered = _content(
            _reasoning(message),
            _text(message.get("content")),
            message.get("refusal"),
            calls,
            forced,
        )
        usage = _usage(data.get("usage"), time.perf_counter() - started)
        return ChatResponse(
            content,
            usage,
            _finish(choices[0].get("finish_reason"), answered, content),
            data.get("id"),
            data.get("model"),
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
        payload, forced = await self._payload(messages, tools, tool_choice, structured)
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        stream = _Stream(forced)
        done = False
        async for _, data in sse_events(self.request(PATH, payload).lines()):
            if done:
                continue  # nothing comes after [DONE]; read on so the connection is released
            if data == DONE:
                done = True
                continue
            chunk = stream_object(data, self.name)
            if isinstance(chunk.get("error"), Mapping):
                raise _error(self.name, data, chunk["error"], self.api_key)
            if stream.feed(chunk):
                yield stream.response()
        if not done:
            raise ModelUnavailable(self.name, "stream cut before data: [DONE]")
        yield stream.final(time.perf_counter() - started)

    async def _payload(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> tuple[dict[str, Any], bool]:
        """The request body, and whether structured output goes through the forced tool."""
        payload: dict[str, Any] = {"model": self.model}
        payload.update(await self.format(messages))
        require_messages(self.name, payload["messages"])
        specs = [_tool(s.name, s.description, s.parameters) for s in tools]
        choice: str | dict[str, Any] | None = None
        if tool_choice is not None:
            choice = tool_choice if tool_choice in TOOL_MODES else _named(tool_choice)
        forced = structured is not None and not self.capabilities.structured_output
        if structured is not None and not forced:
            schema = {"name": SCHEMA_NAME, "schema": dict(structured)}
            payload["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif structured is not None:
            if structured.get("type") != "object":
                raise ModelRejected(
                    self.name,
                    "structured output goes through a forced tool here (capabilities say no "
                    "native structured output), whose schema must be an object at the root",
                )
            specs.append(
                _tool(ANSWER_TOOL, "Give your answer as this tool's arguments.", structured)
            )
            choice = _named(ANSWER_TOOL)
        if not specs:
            if choice == "required":
                raise ModelRejected(self.name, "tool_choice 'required' needs at least one tool")
            return payload, forced
        payload["tools"] = specs
        if choice is not None:
            payload["tool_choice"] = choice
        if not self.capabilities.parallel_tool_calls:
            payload["parallel_tool_calls"] = False
        return payload, forced


def _tool(name: str, description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "parameters": dict(schema)}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def _arguments(call: Mapping[str, Any]) -> str:
    arguments = (call.get("function") or {}).get("arguments")
    # Some compatible servers send the arguments as an object rather than JSON text.
    return arguments if isinstance(arguments, str) else json.dumps(arguments or {})


def _text(content: Any) -> str:
    """Message content: a string, or (from some compatible servers) a list of text parts."""
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _reasoning(message: Mapping[str, Any]) -> str:
    """Visible reasoning: DeepSeek's ``reasoning_content``, or ``reasoning`` (some servers)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


def _content(
    reasoning: str, text: str, refusal: str | None, calls: Iterable[Call], forced: bool
) -> tuple[list[Block], bool]:
    """The answer's blocks, and whether it holds the forced tool's structured answer (which
    then is its only text, so ``response.text`` is the JSON)."""
    content: list[Block] = []
    if reasoning:
        content.append(ThinkingBlock(reasoning))
    if text:
        content.append(TextBlock(text))
    if refusal:
        content.append(TextBlock(refusal, extra={"refusal": True}))
    answered = False
    for call_id, name, arguments in calls:
        if forced and name == ANSWER_TOOL and not answered:
            content = [b for b in content if not isinstance(b, TextBlock)]
            content.append(TextBlock(arguments))
            answered = True
        else:
            # Some compatible servers leave out call ids; the API needs one to pair the result.
            content.append(parse_tool_arguments(call_id or f"call_{new_id()}", name, arguments))
    return content, answered


def _finish(finish: str | None, answered: bool, content: list[Block]) -> str | None:
    """A forced structured answer is an answer, not a tool call to run."""
    if (
        answered
        and finish == "tool_calls"
        and not any(isinstance(b, ToolUseBlock) for b in content)
    ):
        return "stop"
    return finish


def _usage(usage: Any, seconds: float) -> Usage:
    usage = usage if isinstance(usage, Mapping) else {}
    return Usage(
        input_tokens=reported_tokens(usage.get("prompt_tokens")),
        output_tokens=reported_tokens(usage.get("completion_tokens")),
        seconds=seconds,
        cached_input_tokens=reported_count(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=reported_count(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def _error(model: str, body: str, error: Mapping[str, Any], key: Secret | None) -> ModelError:
    """An error sent in a 200 answer or mid-stream: a bad request is rejected, the rest (server
    errors, overload) is worth retrying."""
    message = redact(provider_message(body), key)
    if error.get("type") == "invalid_request_error":
        return ModelRejected(model, message)
    return ModelUnavailable(model, message)


class _Stream:
    """Assembles the chunks of one streamed answer: text and reasoning deltas, and tool-call
    arguments from fragments keyed by the call's ``index``."""

    def __init__(self, forced: bool) -> None:
        self.forced = forced
        self.id: str | None = None
        self.model: str | None = None
        self.text = ""
        self.reasoning = ""
        self.refusal = ""
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        self.finish: str | None = None
        self.usage: Any = None

    def feed(self, chunk: Mapping[str, Any]) -> bool:
        """Take one chunk; True when the visible content changed."""
        self.id = self.id or reported_text(chunk.get("id"))
        self.model = self.model or reported_text(chunk.get("model"))
        if chunk.get("usage"):  # the last chunk (choices empty) with stream_options.include_usage
            self.usage = chunk["usage"]
        changed = False
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1: the first choice is the answer
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                self.text += text
                changed = True
            if reasoning := _reasoning(delta):
                self.reasoning += reasoning
                changed = True
            if refusal := delta.get("refusal"):
                self.refusal += refusal
                changed = True
            for position, call in enumerate(delta.get("tool_calls") or ()):
                slot = self.calls.setdefault(call.get("index", position), ["", "", ""])
                function = call.get("function") or {}
                slot[0] = call.get("id") or slot[0]
                slot[1] = function.get("name") or slot[1]
                slot[2] += function.get("arguments") or ""
                changed = changed or (self.forced and slot[1] == ANSWER_TOOL)
            self.finish = choice.get("finish_reason") or self.finish
        return changed

    def response(self) -> ChatResponse:
        """What is known so far; tool calls show when whole, except the forced answer's JSON,
        which grows as text."""
        calls = [(i, n, a) for i, n, a in self._calls() if self.forced and n == ANSWER_TOOL]
        content, _ = _content(self.reasoning, self.text, self.refusal, calls, self.forced)
        return ChatResponse(content, id=self.id, model=self.model)

    def final(self, seconds: float) -> ChatResponse:
        content, answered = _content(
            self.reasoning, self.text, self.refusal, self._calls(), self.forced
        )
        finish = _finish(self.finish, answered, content)
        return ChatResponse(content, _usage(self.usage, seconds), finish, self.id, self.model)

    def _calls(self) -> list[Call]:
        return [(c[0], c[1], c[2]) for _, c in sorted(self.calls.items())]
