"""Messages → the ``system`` and ``messages`` of an Anthropic Messages API request.

The API takes one top-level system prompt and alternating user / assistant turns of content
blocks. So system messages are lifted out, consecutive turns of one role are merged, tool results
go in a user turn (first in it, all of them together, as the API requires), and thinking blocks
go back with their signatures exactly as they came.
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
    UnknownBlock,
    URLSource,
    VideoBlock,
)
from aopkit.formatting import (
    Formatter,
    Recording,
    inline,
    is_http,
    media_note,
    transcript_text,
    unsupported_media_reason,
)

if TYPE_CHECKING:
    from aopkit.http import HTTPPool
    from aopkit.models import Capabilities

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
NATIVE = "anthropic"  # ``extra["provider"]`` of an UnknownBlock holding an Anthropic block as is
MEDIA = (ImageBlock, AudioBlock, VideoBlock)
NO_ERROR_TEXT = "the tool failed without a message"

Item = dict[str, Any]


def text_item(text: str) -> Item:
    return {"type": "text", "text": text}


def tool_use(block: ToolUseBlock) -> Item:
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}


def left_out(block: Block, why: str) -> Item:
    """A note standing in for a block the API cannot take: never a silent drop."""
    if isinstance(block, MEDIA):
        return text_item(media_note(block, why))
    return text_item(f"[{block.type} block not shown to the model ({why})]")


class _Builder(Recording):
    """Collects the system prompt and the turns of one request. Turns are merged as items are
    added (through :meth:`lift` and :meth:`add`), so what a message added merges alike anywhere."""

    def __init__(self, capabilities: Capabilities, pool: HTTPPool | None) -> None:
        self.capabilities = capabilities
        self.pool = pool
        self.system: list[Item] = []
        self.turns: list[tuple[str, list[Item], list[Item]]] = []  # role, tool results, the rest

    def replay(self, made: list[tuple[str, Item]]) -> None:
        for role, item in made:
            if role == "system":
                self.system.append(item)
            else:
                self.add(role, item)

    def lift(self, item: Item) -> None:
        """Add to the system prompt."""
        self.note(("system", item))
        self.system.append(item)

    def add(self, role: str, item: Item) -> None:
        self.note((role, item))
        if not self.turns or self.turns[-1][0] != role:
            self.turns.append((role, [], []))
        _, results, rest = self.turns[-1]
        (results if item["type"] == "tool_result" else rest).append(item)

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [{"role": r, "content": res + rest} for r, res, rest in self.turns]
        }
        if self.system:
            out["system"] = self.system
        return out

    async def message(self, msg: Msg) -> None:
        for block in msg.blocks():
            # Tool calls are the assistant's and their results the user's, whoever holds them.
            if isinstance(block, ToolResultBlock):
                self.add("user", await self.tool_result(block))
            elif isinstance(block, ToolUseBlock):
                self.add("assistant", tool_use(block))
            elif msg.role == "system":
                if not isinstance(block, TextBlock):
                    self.lift(left_out(block, "the system prompt takes text only"))
                elif block.text:
                    self.lift(text_item(block.text))
            elif (item := await self.block(block)) is not None:
                self.add(msg.role, item)

    async def transcript(self, segment: list[Msg]) -> None:
        """Several speakers folded into one user turn: ``name: text`` lines, then their media."""
        text = transcript_text(segment)
        if text.strip():
            self.add("user", text_item(text))
        for msg in segment:
            for block in msg.blocks():
                if isinstance(block, MEDIA):
                    self.add("user", await self.media(block))

    async def block(self, block: Block) -> Item | None:
        if isinstance(block, TextBlock):
            return text_item(block.text) if block.text else None  # the API rejects empty text
        if isinstance(block, ThinkingBlock):
            if "signature" in block.extra:
                signature = block.extra["signature"]
                return {"type": "thinking", "thinking": block.thinking, "signature": signature}
            if "data" in block.extra:
                return {"type": "redacted_thinking", "data": block.extra["data"]}
            return None  # unsigned reasoning (another model's) cannot be verified by the API
        if isinstance(block, ToolUseBlock):
            return tool_use(block)
        if isinstance(block, ToolResultBlock):
            return await self.tool_result(block)
        if isinstance(block, MEDIA):
            return await self.media(block)
        if isinstance(block, UnknownBlock) and block.extra.get("provider") == NATIVE:
            return dict(block.fields)
        return left_out(block, "the Anthropic API has no such block")

    async def tool_result(self, block: ToolResultBlock) -> Item:
        item: Item = {"type": "tool_result", "tool_use_id": block.id}
        content: str | list[Item]
        if isinstance(block.output, str):
            content = block.output
        else:
            content = []
            for part in block.output:
                converted = await self.block(part)
                if converted is not None and converted["type"] not in ("text", "image"):
                    converted = left_out(part, "a tool result holds only text and images")
                if converted is not None:
                    content.append(converted)
        if block.is_error:
            item["is_error"] = True
            content = content or NO_ERROR_TEXT  # the API rejects an error result without content
        if content:
            item["content"] = content
        return item

    async def media(self, block: ImageBlock | AudioBlock | VideoBlock) -> Item:
        reason = unsupported_media_reason(block, self.capabilities)
        if reason is None and not isinstance(block, ImageBlock):
            reason = f"the Anthropic API does not take {block.type}"
        if reason is not None:
            return left_out(block, reason)
        source = block.source
        if self.capabilities.media_urls and isinstance(source, URLSource) and is_http(source):
            return {"type": "image", "source": {"type": "url", "url": source.url}}
        media_type, data = await inline(source, self.pool)
        if media_type not in IMAGE_TYPES:
            why = f"Anthropic takes JPEG, PNG, GIF and WebP images, not {media_type}"
            return left_out(block, why)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }


class AnthropicFormatter(Formatter):
    """One conversation: user and assistant turns as they are."""

    name = "anthropic"

    def builder(self, capabilities: Capabilities, pool: HTTPPool | None) -> _Builder:
        return _Builder(capabilities, pool)


class AnthropicMultiAgentFormatter(AnthropicFormatter):
    """Several named speakers: their messages folded into ``name: text`` transcripts in user
    turns; tool exchanges stay native, system messages stay system."""

    name = "anthropic-multiagent"
    multi_agent = True
