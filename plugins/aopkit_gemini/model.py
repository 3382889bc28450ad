"""The Gemini ``generateContent`` API: requests, answers, streams and their errors."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

from aopkit.blocks import (
    AudioBlock,
    Base64Source,
    Block,
    ImageBlock,
    TextBlock,
    ToolUseBlock,
    VideoBlock,
)
from aopkit.http import HTTPChatModel, error_for_status, sse_events, stream_object
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

from .formatter import DEFAULT_BASE_URL, GENERATED_ID_PREFIX, SIGNATURE
from .schema import SchemaError, to_gemini_schema

if TYPE_CHECKING:
    from aopkit import Kernel, Msg

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
MEDIA = {"image": ImageBlock, "audio": AudioBlock, "video": VideoBlock}


class GeminiModel(HTTPChatModel):
    """``gemini:<model>`` — Google's Gemini API (``GEMINI_API_KEY``, ``GEMINI_BASE_URL``).

    ``generation_config`` goes to ``generationConfig`` (temperature, ``maxOutputTokens``,
    ``thinkingConfig``...), ``safety_settings`` to ``safetySettings``.
    """

    provider = "gemini"
    default_base_url = DEFAULT_BASE_URL
    env_prefix = "GEMINI"
    formatter_name = "gemini"
    capabilities = Capabilities(
        structured_output=True,
        media=frozenset({"image", "audio", "video"}),
        media_urls=False,  # only Files API / YouTube URIs; other URLs are inlined
        thinking=True,
    )

    def __init__(
        self,
        model: str,
        *,
        kernel: Kernel,
        generation_config: Mapping[str, Any] | None = None,
        safety_settings: Sequence[Mapping[str, Any]] | None = None,
        api_version: str = "v1beta",
        **options: Any,
    ) -> None:
        super().__init__(model.removeprefix("models/"), kernel=kernel, **options)
        self.generation_config = dict(generation_config or {})
        self.safety_settings = [dict(s) for s in safety_settings or ()]
        self.path = f"/{api_version}/models/{quote(self.model, safe='-._~')}"

    def auth_headers(self) -> dict[str, str]:
        """The key travels in a header, never in the URL (URLs end up in logs)."""
        return {"x-goog-api-key": self.api_key.reveal()} if self.api_key else {}

    def retry_after_in_body(self, body: str) -> float | None:
        """Google says how long to wait in a ``RetryInfo`` detail (``"retryDelay": "7s"``)."""
        try:
            details = json.loads(body)["error"]["details"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        for detail in details if isinstance(details, list) else ():
            delay = detail.get("retryDelay") if isinstance(detail, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return float(delay[:-1])
                except ValueError:
                    return None
        return None

    async def _payload(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = await self.format(messages)
        require_messages(self.name, payload["contents"])
        if tools:
            payload["tools"] = [{"functionDeclarations": [self._declaration(t) for t in tools]}]
            if tool_choice is not None:
                config: dict[str, Any] = {"mode": MODES.get(tool_choice, "ANY")}
                if tool_choice not in MODES:
                    config["allowedFunctionNames"] = [tool_choice]
                payload["toolConfig"] = {"functionCallingConfig": config}
        generation = dict(self.generation_config)
        if structured is not None:
            generation["responseMimeType"] = "application/json"
            generation["responseSchema"] = self._schema(structured, "the structured output")
        if generation:
            payload["generationConfig"] = generation
        if self.safety_settings:
            payload["safetySettings"] = self.safety_settings
        return payload

    def _declaration(self, tool: ToolSpec) -> dict[str, Any]:
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        parameters = self._schema(tool.parameters, f"tool {tool.name!r}")
        if parameters.get("properties"):  # Gemini rejects an object without properties
            declaration["parameters"] = parameters
        return declaration

    def _schema(self, schema: Mapping[str, Any], what: str) -> dict[str, Any]:
        try:
            return to_gemini_schema(schema)
        except SchemaError as exc:
            raise ModelRejected(self.name, f"{what}: {exc}") from None

    async def _complete(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        payload = await self._payload(messages, tools, tool_choice, structured)
        started = time.perf_counter()
        answer = await self.request(f"{self.path}:generateContent", payload).send()
        reader = _Reader(self)
        reader.add(answer)
        return reader.response(time.perf_counter() - started)

    async def _stream(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        payload = await self._payload(messages, tools, tool_choice, structured)
        started = time.perf_counter()
        request = self.request(f"{self.path}:streamGenerateContent?alt=sse", payload)
        reader = _Reader(self)
        async for _, data in sse_events(request.lines()):
            reader.add(stream_object(data, self.name))
            if reader.finish is None:
                yield reader.response()
        # There is no end marker: the last chunk is the one whose candidate has a finishReason.
        if reader.finish is None:
            raise ModelUnavailable(self.name, "stream cut: it ended before a finishReason")
        yield reader.response(time.perf_counter() - started)


class _Reader:
    """Gathers ``GenerateContentResponse`` chunks (one for a plain call) into blocks: text
    runs are joined until a part closes them with a thought signature."""

    def __init__(self, model: GeminiModel) -> None:
        self.model = model
        self.blocks: list[Block] = []
        self.run: list[str] = []
        self.run_thought = False
        self.run_extra: dict[str, Any] | None = None  # None: no text run open
        self.finish: str | None = None
        self.usage = Usage()
        self.id: str | None = None
        self.version: str | None = None  # the model version that answered

    def add(self, chunk: Mapping[str, Any]) -> None:
        if "error" in chunk:  # an error sent in the middle of a stream
            status = chunk["error"].get("code") if isinstance(chunk["error"], Mapping) else None
            status = status if isinstance(status, int) else 500
            body = json.dumps(chunk)
            raise error_for_status(self.model.name, status, {}, body, self.model.kernel.secrets)
        self.id = reported_text(chunk.get("responseId")) or self.id
        self.version = reported_text(chunk.get("modelVersion")) or self.version
        if isinstance(usage := chunk.get("usageMetadata"), Mapping):
            self.usage = Usage(
                input_tokens=reported_tokens(usage.get("promptTokenCount")),
                output_tokens=reported_tokens(
                    usage.get("candidatesTokenCount"), usage.get("thoughtsTokenCount")
                ),
                cached_input_tokens=reported_tokens(usage.get("cachedContentTokenCount")),
                reasoning_tokens=reported_tokens(usage.get("thoughtsTokenCount")),
            )
        candidates = chunk.get("candidates") or []
        if not candidates:
            blocked = (chunk.get("promptFeedback") or {}).get("blockReason")
            if blocked:
                raise ModelRejected(self.model.name, f"the prompt was blocked ({blocked})")
            return
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            self._part(part)
        if reason := reported_text(candidate.get("finishReason")):
            self.finish = reason

    def _part(self, part: Mapping[str, Any]) -> None:
        signature = part.get(SIGNATURE)
        if "text" in part:
            thought = part.get("thought") is True
            open_run = self.run_extra is not None and SIGNATURE not in self.run_extra
            if not (open_run and self.run_thought == thought):
                self._close()
                self.run_thought, self.run_extra = thought, {}
            self.run.append(part["text"])
            if signature is not None and self.run_extra is not None:
                self.run_extra[SIGNATURE] = signature
            return
        self._close()
        extra = {SIGNATURE: signature} if signature is not None else {}
        if (call := part.get("functionCall")) is not None:
            call_id = call.get("id") or f"{GENERATED_ID_PREFIX}{new_id()}"
            self.blocks.append(
                parse_tool_arguments(call_id, call.get("name", ""), call.get("args"), extra)
            )
        elif (data := part.get("inlineData")) is not None:
            media_type = data.get("mimeType", "application/octet-stream")
            kind = MEDIA.get(media_type.partition("/")[0])
            if kind is not None:
                self.blocks.append(
                    kind(Base64Source(media_type, data.get("data", "")), extra=extra)
                )

    def _run_block(self) -> Block | None:
        if self.run_extra is None:
            return None
        text = "".join(self.run)
        if self.run_thought:
            return thinking(text, **self.run_extra)
        return TextBlock(text, extra=dict(self.run_extra))

    def _close(self) -> None:
        if (block := self._run_block()) is not None:
            self.blocks.append(block)
        self.run, self.run_extra = [], None

    def response(self, seconds: float | None = None) -> ChatResponse:
        """What was read so far; with ``seconds``, the final answer with usage and reason."""
        content = list(self.blocks)
        if (block := self._run_block()) is not None:
            content.append(block)
        if seconds is None:
            return ChatResponse(content, id=self.id, model=self.version)
        if self.finish is None:
            raise ModelUnavailable(self.model.name, "the answer has no candidate")
        reason = FINISH_REASONS.get(self.finish, self.finish.lower())
        if reason == "stop" and any(isinstance(b, ToolUseBlock) for b in content):
            reason = "tool_use"
        usage = attrs.evolve(self.usage, seconds=seconds)
        return ChatResponse(content, usage, reason, self.id, self.version)
