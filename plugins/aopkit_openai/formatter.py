"""Messages → the ``messages`` of an OpenAI chat-completions request.

Text-only messages take a fast path: one dict each, no block walk. Tool calls go on the
assistant message as ``tool_calls``; each result is a ``role: tool`` message, which takes text
only, so media a tool returned are noted there and shown in one user message after the run of
results (the results of parallel calls stay contiguous, as the API requires). ``strict`` is for
OpenAI-compatible servers that take string content only and no ``name``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aopkit import Msg
from aopkit.blocks import (
    AudioBlock,
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
    add_message,
    has_media,
    inline,
    is_http,
    keep,
    media_note,
    set_kept,
    transcript_segments,
    transcript_text,
    unsupported_media_reason,
)

if TYPE_CHECKING:
    from aopkit.formatting import MediaBlock
    from aopkit.http import HTTPPool
    from aopkit.models import Capabilities

Item = dict[str, Any]

MEDIA = (ImageBlock, AudioBlock, VideoBlock)
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
AUDIO_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}
_NO_IDS: frozenset[str] = frozenset()
NAME_LIMIT = 64  # the API takes names matching ^[a-zA-Z0-9_-]+$, of at most 64 characters
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_names: dict[str, str] = {}  # speaker name -> wire name ("" when none is left): few, reused


def wire_name(name: str) -> str:
    """``name`` as the API's ``name`` field allows it; "" when nothing usable is left."""
    wired = _names.get(name)
    if wired is None:
        if len(_names) > 4096:  # many one-off names: start over rather than grow for ever
            _names.clear()
        wired = _names[name] = _NOT_IN_NAME.sub("_", name).strip("_")[:NAME_LIMIT]
    return wired


def text_part(text: str) -> Item:
    return {"type": "text", "text": text}


def call_arguments(block: ToolUseBlock) -> str:
    """A tool call's arguments as JSON text; arguments that did not parse go back verbatim."""
    if block.raw_input is not None:
        return block.raw_input
    return json.dumps(block.input, ensure_ascii=False)


def linked(msg: Msg, capabilities: Capabilities) -> bool:
    """Whether the media of ``msg`` are all images the model fetches itself (http URLs, to a
    model that takes them), in a user's text-and-images message: its items then hold nothing
    read at format time, and are as small as its text, so they are kept like a text message's
    (see :func:`aopkit.formatting.has_media`)."""
    if not capabilities.media_urls or msg.role != "user":
        return False
    for block in msg.content:
        if block.__class__ is ImageBlock:
            if not is_http(block.source):  # type: ignore[attr-defined]
                return False
        elif block.__class__ is not TextBlock:
            return False
    return True


def tool_call(block: ToolUseBlock) -> Item:
    """A tool call as the API takes it back."""
    return {
        "id": block.id,
        "type": "function",
        "function": {"name": block.name, "arguments": call_arguments(block)},
    }


async def image_url(
    block: MediaBlock, capabilities: Capabilities, pool: HTTPPool | None
) -> tuple[str, str | None]:
    """The URL an image goes as (its own http URL where the model fetches URLs, else a
    ``data:`` URL), or why it cannot go: an image type the API does not take."""
    source = block.source
    if capabilities.media_urls and isinstance(source, URLSource) and is_http(source):
        return source.url, None
    media_type, data = await inline(source, pool)
    if media_type not in IMAGE_TYPES:
        return "", f"the API takes PNG, JPEG, GIF and WebP images, not {media_type}"
    return f"data:{media_type};base64,{data}", None


async def tool_output(
    block: ToolResultBlock, media: Callable[[MediaBlock], Awaitable[Item]], text_type: str
) -> tuple[str, list[Item]]:
    """A tool result as the text both APIs take for it, and the parts that go in a user
    message after the results: media a tool returned that ``media`` made a part of (tool
    outputs take text only), each after a label. ``text_type``: the type of a text part."""
    if isinstance(block.output, str):
        text, held = block.output, []
    else:
        pieces: list[str] = []
        held = []
        for part in block.output:
            if isinstance(part, TextBlock):
                pieces.append(part.text)
            elif isinstance(part, MEDIA):
                item = await media(part)
                if item["type"] == text_type:
                    pieces.append(item["text"])
                else:
                    pieces.append(f"[{part.type} shown in the next user message]")
                    label = f"{part.type} returned by tool {block.name} (call {block.id}):"
                    held += [{"type": text_type, "text": label}, item]
            else:
                pieces.append(f"[{part.type} block not shown to the model]")
        text = "\n".join(pieces)
    if block.is_error:
        text = f"Error: {text}"
    return text, held


class OpenAIFormatter(Formatter):
    """One conversation, messages as they are. ``strict``: string content and no ``name``;
    ``send_reasoning``: thinking goes back as the assistant's ``reasoning_content``."""

    name = "openai"

    def __init__(self, *, strict: bool = False, send_reasoning: bool = False) -> None:
        self.strict = strict
        self.send_reasoning = send_reasoning

    def configured(self, *, strict: bool, send_reasoning: bool) -> OpenAIFormatter:
        """This formatter with the given options (itself when they are already so)."""
        if strict == self.strict and send_reasoning == self.send_reasoning:
            return self
        return type(self)(strict=strict, send_reasoning=send_reasoning)

    async def format(
        self, messages: Sequence[Msg], *, capabilities: Capabilities, pool: HTTPPool | None = None
    ) -> dict[str, Any]:
        out: list[Item] = []
        converter = _Converter(self, capabilities, pool, out)
        pending = converter.pending  # the same list: media waiting for the next user message
        key = self.key(capabilities)
        names = not self.strict
        append = out.append
        for msg in messages:
            found = msg._formatted  # (key, made): see aopkit.formatting.keep
            if found is not None and found[0] is key:
                made = found[1]
            elif msg.content.__class__ is str:  # the fast path: plain text, one item
                role = msg.role
                if (
                    names
                    and role != "system"
                    and (name := _names.get(msg.name) or wire_name(msg.name))  # its cache first
                ):
                    made = {"role": role, "content": msg.content, "name": name}
                else:
                    made = {"role": role, "content": msg.content}
                set_kept(msg, (key, made))
                if not pending:
                    append(made)
                    continue
            elif has_media(msg) and not linked(msg, capabilities):
                await converter.message(msg)  # made anew each time: see has_media
                continue
            else:
                made = keep(msg, key, await converter.items(msg))
            if made.__class__ is dict and not pending:
                append(made)
            elif made.__class__ is dict:
                converter.emit(made)
            elif pending:
                for item in made:
                    converter.emit(item)
            else:
                out += made
        converter.flush()
        return {"messages": out}


class OpenAIMultiAgentFormatter(OpenAIFormatter):
    """Several named speakers: runs of their messages folded into one user message of
    ``name: text`` lines (media after them); tool exchanges stay native, system stays system."""

    name = "openai-multiagent"
    multi_agent = True

    async def format(
        self, messages: Sequence[Msg], *, capabilities: Capabilities, pool: HTTPPool | None = None
    ) -> dict[str, Any]:
        out: list[Item] = []
        converter = _Converter(self, capabilities, pool, out)
        key = self.key(capabilities)
        for part in transcript_segments(messages):
            if isinstance(part, Msg):
                await add_message(converter, part, key)
            else:
                await converter.transcript(part)
        converter.flush()
        return {"messages": out}


class _Converter:
    """The slow path of one ``format`` call: messages with blocks."""

    def __init__(
        self,
        formatter: OpenAIFormatter,
        capabilities: Capabilities,
        pool: HTTPPool | None,
        out: list[Item],
    ) -> None:
        self.strict = formatter.strict
        self.send_reasoning = formatter.send_reasoning
        self.capabilities = capabilities
        self.pool = pool
        self.out = out
        self.pending: list[Item] = []  # media parts for a user message after the tool results

    def flush(self) -> None:
        if self.pending:
            self.out.append({"role": "user", "content": self.pending.copy()})
            self.pending.clear()

    def emit(self, item: Item) -> None:
        """Add a message; media held back for a user message go first unless it is a tool
        result (which must directly follow the call or the other results)."""
        if item["role"] != "tool":
            self.flush()
        self.out.append(item)

    def content(self, parts: list[Item]) -> str | list[Item]:
        if self.strict:
            return "\n".join(p["text"] for p in parts)  # in strict mode every part is text
        if len(parts) == 1 and parts[0]["type"] == "text":
            return str(parts[0]["text"])
        return parts

    def named(self, item: Item, msg: Msg) -> Item:
        if not self.strict and (name := wire_name(msg.name)):
            item["name"] = name
        return item

    def replay(self, made: Item | list[Item]) -> None:
        """Add again what a message was formatted to: one item (the fast path's) or a list."""
        for item in [made] if made.__class__ is dict else made:
            self.emit(item)

    async def recorded(self, msg: Msg) -> list[Item]:
        """Add ``msg``, a message without media, and return its items (see :meth:`items`)."""
        items = await self.items(msg)
        self.replay(items)
        return items

    async def items(self, msg: Msg) -> list[Item]:
        """The items of ``msg``, a message without media, apart from the request's: they are
        the same wherever it stands (media held back for a user message come only from
        media), so they can be kept on the message and added again as they are."""
        out, pending = self.out, self.pending
        self.out, self.pending = [], []
        try:
            await self.message(msg)
            return self.out
        finally:
            self.out, self.pending = out, pending

    async def message(self, msg: Msg) -> None:
        role = msg.role
        parts: list[Item] = []
        calls: list[Item] = []
        reasoning: list[str] = []
        held: list[Item] = []  # media of an assistant message, shown in the next user message
        results: list[ToolResultBlock] = []  # whatever the role: a result is a tool message
        content = msg.content
        for block in [TextBlock(content)] if content.__class__ is str else content:
            if isinstance(block, TextBlock):
                parts.append(text_part(block.text))
            elif isinstance(block, ToolUseBlock):
                calls.append(tool_call(block))
            elif isinstance(block, ToolResultBlock):
                results.append(block)
            elif isinstance(block, ThinkingBlock):
                reasoning.append(block.thinking)
            elif isinstance(block, MEDIA):
                if role == "system":
                    parts.append(text_part(media_note(block, "the system prompt takes text only")))
                    continue
                part = await self.media(block)
                if role == "assistant" and part["type"] != "text":
                    parts.append(text_part(f"[{block.type} shown in the next user message]"))
                    held += [text_part(f"{block.type} from {msg.name}:"), part]
                else:
                    parts.append(part)
            else:
                parts.append(text_part(f"[{block.type} block not shown to the model]"))
        own = {call["id"] for call in calls} if calls and results else _NO_IDS
        for block in results:  # answers to earlier calls come first
            if block.id not in own:
                await self.tool_result(block)
        if role != "assistant" and parts:
            item = {"role": role, "content": self.content(parts)}
            self.emit(item if role == "system" else self.named(item, msg))
        if role == "assistant" or calls:
            self.assistant(msg, parts if role == "assistant" else [], calls, reasoning)
            self.pending += held
        for block in results:  # answers to this message's own calls follow them
            if block.id in own:
                await self.tool_result(block)

    def assistant(
        self, msg: Msg, parts: list[Item], calls: list[Item], reasoning: list[str]
    ) -> None:
        # A turn of tool calls only has content "", not null: OpenAI takes both, but llama.cpp's
        # server and other compatible servers reject null.
        content = self.content(parts) if parts else ""
        item = self.named({"role": "assistant", "content": content}, msg)
        if calls:
            item["tool_calls"] = calls
        if reasoning and self.send_reasoning:
            item["reasoning_content"] = "".join(reasoning)
        self.emit(item)

    async def tool_result(self, block: ToolResultBlock) -> None:
        text = block.output
        if text.__class__ is not str or block.is_error:  # else the usual text: no coroutine
            text, held = await tool_output(block, self.media, "text")
            self.pending += held
        self.emit({"role": "tool", "tool_call_id": block.id, "content": text})

    async def transcript(self, segment: list[Msg]) -> None:
        """Several speakers folded into one user message: ``name: text`` lines, then media."""
        parts = [text_part(transcript_text(segment))]
        for msg in segment:
            if isinstance(msg.content, list):
                for block in msg.content:
                    if isinstance(block, MEDIA):
                        parts.append(await self.media(block))
        self.emit({"role": "user", "content": self.content(parts)})

    async def media(self, block: MediaBlock) -> Item:
        """The content part for a media block, or a text part noting why it cannot go."""
        reason = unsupported_media_reason(block, self.capabilities)
        if reason is None and self.strict:
            reason = "this server takes text content only"
        if reason is None and isinstance(block, VideoBlock):
            reason = "the OpenAI chat API does not take video"
        if reason is not None:
            return text_part(media_note(block, reason))
        if isinstance(block, ImageBlock):
            url, why = await image_url(block, self.capabilities, self.pool)
            if why is not None:
                return text_part(media_note(block, why))
            return {"type": "image_url", "image_url": {"url": url}}
        media_type, data = await inline(block.source, self.pool)
        audio_format = AUDIO_FORMATS.get(media_type)
        if audio_format is None:
            return text_part(
                media_note(block, f"the API takes WAV and MP3 audio, not {media_type}")
            )
        return {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}
