"""Messages → the ``messages`` of an Ollama ``/api/chat`` request.

Each message has a string ``content``; images ride beside it in ``images`` as bare base64 (Ollama
takes no URLs, so files and http(s) URLs are read when the request is formatted). Tool calls go
in the assistant's ``tool_calls`` with their arguments as an object; each result is a
``role: "tool"`` message naming its tool in ``tool_name`` (Ollama pairs results with calls by
name and order, not by id). Thinking goes back in the assistant's ``thinking`` field.
"""

from __future__ import annotations

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
    VideoBlock,
)
from aopkit.formatting import (
    Formatter,
    inline,
    media_note,
    transcript_text,
    unsupported_media_reason,
)

if TYPE_CHECKING:
    from aopkit.http import HTTPPool
    from aopkit.models import Capabilities

MEDIA = (ImageBlock, AudioBlock, VideoBlock)

Message = dict[str, Any]


class _Builder:
    """Collects the messages of one request."""

    def __init__(self, capabilities: Capabilities, pool: HTTPPool | None) -> None:
        self.capabilities = capabilities
        self.pool = pool
        self.messages: list[Message] = []

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
        texts: list[str] = []
        images: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        own: set[str] = set()  # ids of this message's calls: their results follow them
        results: list[tuple[str, Message]] = []
        for block in msg.blocks():
            if isinstance(block, TextBlock):
                if block.text:
                    texts.append(block.text)
            elif isinstance(block, ThinkingBlock):
                if block.thinking:
                    thoughts.append(block.thinking)
            elif isinstance(block, ToolUseBlock):
                calls.append({"function": {"name": block.name, "arguments": block.input}})
                own.add(block.id)
            elif isinstance(block, ToolResultBlock):
                results.append((block.id, self.tool_result(block)))
            elif isinstance(block, MEDIA):
                if msg.role == "system":
                    texts.append(media_note(block, "the system prompt takes text only"))
                else:
                    await self.media(block, texts, images)
            else:
                texts.append(_left_out(block))
        role = "assistant" if calls else msg.role  # tool calls are the assistant's
        message: Message = {"role": role, "content": "\n".join(texts)}
        if images:
            message["images"] = images
        if thoughts and role == "assistant":
            message["thinking"] = "\n".join(thoughts)
        self.messages.extend(r for i, r in results if i not in own)  # answers to earlier calls
        if calls:
            message["tool_calls"] = calls
        if calls or texts or images or "thinking" in message:
            self.messages.append(message)
        self.messages.extend(r for i, r in results if i in own)

    async def transcript(self, segment: list[Msg]) -> None:
        """Several speakers folded into one user message: ``name: text`` lines and their images."""
        texts: list[str] = []
        images: list[str] = []
        text = transcript_text(segment)
        if text.strip():
            texts.append(text)
        for msg in segment:
            for block in msg.blocks():
                if isinstance(block, MEDIA):
                    await self.media(block, texts, images)
        if texts or images:
            message: Message = {"role": "user", "content": "\n".join(texts)}
            if images:
                message["images"] = images
            self.messages.append(message)

    def tool_result(self, block: ToolResultBlock) -> Message:
        if isinstance(block.output, str):
            text = block.output
        else:
            parts = []
            for part in block.output:
                if isinstance(part, TextBlock):
                    parts.append(part.text)
                elif isinstance(part, MEDIA):
                    parts.append(media_note(part, "an Ollama tool result holds text only"))
                else:
                    parts.append(_left_out(part))
            text = "\n".join(parts)
        if block.is_error:
            text = f"Error: {text}"
        return {"role": "tool", "content": text, "tool_name": block.name}

    async def media(
        self, block: ImageBlock | AudioBlock | VideoBlock, texts: list[str], images: list[str]
    ) -> None:
        """An image goes to ``images``; media the model cannot take become a note in ``texts``."""
        reason = unsupported_media_reason(block, self.capabilities)
        if reason is None and not isinstance(block, ImageBlock):
            reason = f"Ollama does not take {block.type}"
        if reason is not None:
            texts.append(media_note(block, reason))
            return
        _, data = await inline(block.source, self.pool)
        images.append(data)


def _left_out(block: Block) -> str:
    return f"[{block.type} block not shown to the model (Ollama has no such content)]"


class OllamaFormatter(Formatter):
    """One conversation: every message in its own role."""

    name = "ollama"

    def builder(self, capabilities: Capabilities, pool: HTTPPool | None) -> _Builder:
        return _Builder(capabilities, pool)


class OllamaMultiAgentFormatter(OllamaFormatter):
    """Several named speakers: their messages folded into ``name: text`` transcripts in user
    messages; tool exchanges stay native, system messages stay system."""

    name = "ollama-multiagent"
    multi_agent = True
