"""Content blocks: the typed parts of a message.

Blocks are frozen values, so one message can sit in many memories without a copy. Each block
type has a ``type`` tag (its JSON discriminator) and an ``extra`` slot where providers keep what
must round-trip untouched (signatures, reasoning ids).

Forward compatibility: a field this version does not know, on a known block or source type
(written by a newer plugin), is kept in ``unknown_fields`` and dumped back unchanged; a block or
source of an unknown type loads as :class:`UnknownBlock` or :class:`UnknownSource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs


@attrs.frozen
class URLSource:
    """Media referenced by location: ``http(s)://``, ``file://`` or a local path.

    The bytes are only read when a formatter needs them.
    """

    type: ClassVar[str] = "url"
    url: str
    media_type: str | None = None
    unknown_fields: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True)


@attrs.frozen
class Base64Source:
    """Media carried inline as base64 text."""

    type: ClassVar[str] = "base64"
    media_type: str
    data: str
    unknown_fields: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True)


@attrs.frozen
class UnknownSource:
    """Media referenced in a way no loaded plugin knows (a provider's file id, say): every field
    is kept and dumped back unchanged; a formatter that needs the bytes refuses it clearly."""

    type: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)


Source = URLSource | Base64Source | UnknownSource


@attrs.frozen
class Block:
    """Base of every content block; subclasses set the ``type`` tag."""

    type: ClassVar[str] = ""
    extra: dict[str, Any] = attrs.field(factory=dict, kw_only=True)
    unknown_fields: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True)


@attrs.frozen
class TextBlock(Block):
    """Plain text, the most common block: ``TextBlock("Hello")``."""

    type: ClassVar[str] = "text"
    text: str


@attrs.frozen
class ThinkingBlock(Block):
    """A model's visible reasoning; signatures live in ``extra`` and go back unchanged."""

    type: ClassVar[str] = "thinking"
    thinking: str


@attrs.frozen
class ImageBlock(Block):
    """An image, by URL or path (``URLSource``) or inline (``Base64Source``);
    formatters send it to models whose capabilities include ``"image"``."""

    type: ClassVar[str] = "image"
    source: Source


@attrs.frozen
class AudioBlock(Block):
    """A sound clip, by URL or path or inline; sent to models that take ``"audio"``."""

    type: ClassVar[str] = "audio"
    source: Source


@attrs.frozen
class VideoBlock(Block):
    """A video, by URL or path or inline; sent to models that take ``"video"``."""

    type: ClassVar[str] = "video"
    source: Source


@attrs.frozen
class ToolUseBlock(Block):
    """A model asks for a tool to run; ``id`` pairs it with its :class:`ToolResultBlock`.

    ``raw_input`` keeps the arguments exactly as the model wrote them when they did not parse as
    a JSON object (``input`` is then empty): repairing them is the fault-tolerance tiers' job.
    """

    type: ClassVar[str] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    raw_input: str | None = None


@attrs.frozen
class ToolResultBlock(Block):
    """What a tool returned: text, or a list of blocks (text and media)."""

    type: ClassVar[str] = "tool_result"
    id: str
    name: str
    output: str | list[Block]
    is_error: bool = False


@attrs.frozen
class UnknownBlock(Block):
    """A block of a type no loaded plugin knows: every field is kept and dumped back unchanged."""

    type: str  # type: ignore[misc]  # the instance carries the foreign tag
    fields: Mapping[str, Any] = attrs.field(factory=dict)


STANDARD_BLOCKS: tuple[type[Block], ...] = (
    TextBlock,
    ThinkingBlock,
    ImageBlock,
    AudioBlock,
    VideoBlock,
    ToolUseBlock,
    ToolResultBlock,
)
