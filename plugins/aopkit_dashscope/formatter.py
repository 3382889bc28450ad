"""Messages → the ``input`` of a DashScope generation request.

Text models take each message's content as one string; multimodal models (Qwen-VL, Qwen-Omni)
take a list of one-key parts: ``{"text": ...}``, ``{"image": ...}``, ``{"audio": ...}``,
``{"video": ...}``. The form follows the capabilities: a model that declares media takes parts
(and the model sends it to the multimodal endpoint). Tool calls go in the assistant's
``tool_calls`` with their arguments as JSON text; each result is a ``role: "tool"`` message with
its ``tool_call_id``. Thinking is not sent back: DashScope does not take ``reasoning_content``
in the history.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aopkit import Msg
from aopkit.blocks import (
    AudioBlock,
    Block,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from aopkit.formatting import (
    Formatter,
    inline,
    is_http,
    media_note,
    transcript_text,
    unsupported_media_reason,
)

if TYPE_CHECKING:
    from aopkit.http import HTTPPool
    from aopkit.models import Capabilities

MEDIA = (ImageBlock, AudioBlock, VideoBlock)

Part = dict[str, Any]
Message = dict[str, Any]


class _Builder:
    """Collects the messages of one request."""

    def __init__(self, capabilities: Capabilities, pool: HTTPPool | None) -> None:
        self.capabilities = capabilities
        self.pool = pool
        self.parts = bool(capabilities.media)  # the multimodal form: contents are part lists
        self.messages: list[Message] = []

    def content(self, parts: list[Part]) -> str | list[Part]:
        if self.parts:
            return parts
        return "\n".join(p["text"] for p in parts)  # text models: every part is text here

    def payload(self) -> dict[str, Any]:
        return {"messages": self.messages}

    async def recorded(self, msg: Msg) -> list[Message]:
        """Add ``msg``; its messages, kept on it to be added again (see ``Replaying``)."""
        start = len(self.messages)
        await self.message(msg)
        return self.messages[start:]

    def replay(self, made: list[Message]) -> None:
        self.messages += made

    async def message(self, msg: Msg) -> None:
        parts: list[Part] = []
        calls: list[dict[str, Any]] = []
        results: list[Message] = []
        for block in msg.blocks():
            if isinstance(block, TextBlock):
                if block.text:
                    parts.append({"text": block.text})
            elif isinstance(block, ThinkingBlock):
                continue
            elif isinstance(block, ToolUseBlock):
                calls.append(_call(block))
            elif isinstance(block, ToolResultBlock):
                results.append(await self.tool_result(block))
            elif isinstance(block, MEDIA):
                if msg.role == "system":
                    parts.append({"text": media_note(block, "the system prompt takes text only")})
                else:
                    parts.append(await self.media(block))
            else:
                parts.append({"text": _left_out(block)})
        own = {call["id"] for call in calls}
        # Results of earlier calls first; tool calls are the assistant's, whoever holds them,
        # and the results of this message's own calls follow them.
        self.messages.extend(r for r in results if r["tool_call_id"] not in own)
        if calls:
            # Calls only: content "", never an empty part list, which compatible servers reject.
            content = self.content(parts) if parts else ""
            self.messages.append({"role": "assistant", "content": content, "tool_calls": calls})
        elif parts:
            self.messages.append({"role": msg.role, "content": self.content(parts)})
        self.messages.extend(r for r in results if r["tool_call_id"] in own)

    async def transcript(self, segment: list[Msg]) -> None:
        """Several speakers folded into one user message: ``name: text`` lines, then media."""
        parts: list[Part] = []
        text = transcript_text(segment)
        if text.strip():
            parts.append({"text": text})
        for msg in segment:
            for block in msg.blocks():
                if isinstance(block, MEDIA):
                    parts.append(await self.media(block))
        if parts:
            self.messages.append({"role": "user", "content": self.content(parts)})

    async def tool_result(self, block: ToolResultBlock) -> Message:
        if isinstance(block.output, str):
            text = block.output
        else:
            texts = []
            for part in block.output:
                if isinstance(part, TextBlock):
                    texts.append(part.text)
                elif isinstance(part, MEDIA):
                    texts.append(media_note(part, "a DashScope tool result holds text only"))
                else:
                    texts.append(_left_out(part))
            text = "\n".join(texts)
        if block.is_error:
            text = f"Error: {text}"
        content: str | list[Part] = [{"text": text}] if self.parts else text
        return {"role": "tool", "content": content, "tool_call_id": block.id}

    async def media(self, block: ImageBlock | AudioBlock | VideoBlock) -> Part:
        reason = unsupported_media_reason(block, self.capabilities)
        if reason is not None:
            return {"text": media_note(block, reason)}
        source = block.source
        if self.capabilities.media_urls and isinstance(source, URLSource) and is_http(source):
            return {block.type: source.url}
        media_type, data = await inline(source, self.pool)
        return {block.type: f"data:{media_type};base64,{data}"}


def _call(block: ToolUseBlock) -> dict[str, Any]:
    """A tool call as DashScope wants it back: arguments as the JSON text the model wrote."""
    arguments = block.raw_input
    if arguments is None:
        arguments = json.dumps(block.input, ensure_ascii=False)
    return {
        "id": block.id,
        "type": "function",
        "function": {"name": block.name, "arguments": arguments},
    }


def _left_out(block: Block) -> str:
    return f"[{block.type} block not shown to the model (DashScope has no such content)]"


class DashScopeFormatter(Formatter):
    """One conversation: every message in its own role."""

    name = "dashscope"

    def builder(self, capabilities: Capabilities, pool: HTTPPool | None) -> _Builder:
        return _Builder(capabilities, pool)


class DashScopeMultiAgentFormatter(DashScopeFormatter):
    """Several named speakers: their messages folded into ``name: text`` transcripts in user
    messages; tool exchanges stay native, system messages stay system."""

    name = "dashscope-multiagent"
    multi_agent = True
