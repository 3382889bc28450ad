"""What every provider's formatter shares: media loading at format time, notes for media a
model cannot take, the multi-agent transcript, and truncation to a token budget."""

from __future__ import annotations

import base64
import functools
import mimetypes
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

import attrs

from .blocks import (
    AudioBlock,
    Base64Source,
    Block,
    ImageBlock,
    Source,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownSource,
    URLSource,
    VideoBlock,
)
from .errors import AopkitError
from .message import Msg, _Kept

if TYPE_CHECKING:
    from .http import HTTPPool
    from .models import Capabilities

MediaBlock = ImageBlock | AudioBlock | VideoBlock
MEDIA_BLOCKS = (ImageBlock, AudioBlock, VideoBlock)


MAX_MEDIA_BYTES = 32 * 1024 * 1024
"""The most one media source may hold to be sent inline (a fetched URL, a local file): more is
refused before it is read whole. Providers take less per request; this only keeps a wrong or
hostile source from filling the process's memory."""


class MediaError(AopkitError):
    """A media file could not be read when formatting."""


class Builder(Protocol):
    """Builds one request's messages: fed message by message (and transcripts of plain
    messages, for multi-agent formatters), then asked for the payload."""

    async def message(self, msg: Msg) -> None: ...
    async def transcript(self, messages: list[Msg]) -> None: ...
    def payload(self) -> Any: ...


@runtime_checkable
class Replaying(Protocol):
    """A :class:`Builder` whose messages can be kept and added again: what :meth:`recorded`
    adds for a message without media must be the same wherever the message stands, and
    :meth:`replay` must add it again exactly so. Formatters whose builders are so format each
    message once (see :func:`cache_key`)."""

    async def recorded(self, msg: Msg) -> Any:
        """Add ``msg`` and return what it added (never changed afterwards)."""
        ...

    def replay(self, made: Any) -> None:
        """Add again what :meth:`recorded` returned for a message."""
        ...


class Recording:
    """A base for :class:`Replaying` builders that send every addition through one method of
    theirs: that method calls :meth:`note` with what it added, and :meth:`recorded` keeps what
    one message adds. The builder's :meth:`replay` adds such notes again."""

    made: list[Any] | None = None  # what the message being recorded adds

    async def message(self, msg: Msg) -> None:
        raise NotImplementedError

    def note(self, added: Any) -> None:
        """Keep ``added`` if a message is being recorded."""
        if self.made is not None:
            self.made.append(added)

    async def recorded(self, msg: Msg) -> list[Any]:
        """Add ``msg`` and return what it added (see :class:`Replaying`)."""
        self.made = []
        try:
            await self.message(msg)
            return self.made
        finally:
            self.made = None


class Formatter:
    """Turns messages into the message part of one provider's request payload.

    Subclasses return a fresh :class:`Builder` from :meth:`builder` (or override :meth:`format`
    outright); ``multi_agent`` formatters fold several named speakers into a transcript the
    model can read (see :func:`transcript_segments`). A builder that is also
    :class:`Replaying` formats each message once per configuration (:meth:`key`).
    """

    name: ClassVar[str] = ""
    multi_agent: ClassVar[bool] = False

    def builder(self, capabilities: Capabilities, pool: HTTPPool | None) -> Builder:
        raise NotImplementedError(f"{type(self).__name__} must implement builder() or format()")

    def key(self, capabilities: Capabilities) -> object:
        """The key of what this formatter makes of a message for a model with
        ``capabilities``: its class, its options (its attributes) and the capabilities."""
        return cache_key(type(self), capabilities, *sorted(vars(self).items()))

    async def format(
        self, messages: Sequence[Msg], *, capabilities: Capabilities, pool: HTTPPool | None = None
    ) -> Any:
        builder = self.builder(capabilities, pool)
        key = self.key(capabilities) if _replaying(type(builder)) else None
        if not self.multi_agent:
            for msg in messages:
                await add_message(builder, msg, key)
        else:
            for part in transcript_segments(messages):
                if isinstance(part, Msg):
                    await add_message(builder, part, key)
                else:
                    await builder.transcript(part)
        return builder.payload()


@functools.cache
def _replaying(builder: type) -> bool:
    """Whether builders of this class are :class:`Replaying`: asked once per class, as a
    protocol check costs microseconds, more than formatting a short message."""
    return issubclass(builder, Replaying)


async def add_message(builder: Builder, msg: Msg, key: object) -> None:
    """Add ``msg`` as it was formatted under ``key`` before, or format and keep it (a
    message with media is formatted afresh each time, see :func:`has_media`; a None
    ``key`` keeps nothing). For formatters that override :meth:`Formatter.format`: their
    builder must be :class:`Replaying`."""
    if key is None or has_media(msg):
        await builder.message(msg)
        return
    made = kept(msg, key)
    if made is None:
        keep(msg, key, await builder.recorded(msg))  # type: ignore[attr-defined]
    else:
        builder.replay(made)  # type: ignore[attr-defined]


# -- the formatted-message cache ------------------------------------------------------------
_KEYS: dict[tuple[Any, ...], object] = {}  # a formatter configuration -> its cache key


def cache_key(*configuration: Any) -> object:
    """The key under which messages keep what one formatter configuration made of them.

    ``configuration`` must hold everything a message's formatted form depends on besides the
    message itself (the formatter class, its options, the model's capabilities); equal
    configurations share one key, so a formatter made again finds what its twin made. The
    key is a plain object, cheap to look up once per message; there is one per configuration
    a process ever uses."""
    key = _KEYS.get(configuration)
    if key is None:
        key = _KEYS.setdefault(configuration, object())
    return key


set_kept = _Kept.__dict__["_formatted"].__set__  # the slot's own setter: past the frozen class
"""``set_kept(msg, (key, made))`` is :func:`keep` without a call of its own, for a formatter's
loop over every message of a history it has not seen."""


def kept(msg: Msg, key: object) -> Any:
    """What was made of ``msg`` under ``key`` (see :func:`keep`), or None."""
    found = msg._formatted
    return found[1] if found is not None and found[0] is key else None


def keep(msg: Msg, key: object, made: Any) -> Any:
    """Keep ``made`` on ``msg`` under ``key``, in place of what another key made (a message is
    almost always formatted by one configuration: one slot, set once). It goes when the
    message goes; copies, pickles, saved sessions and messages derived with
    :func:`attrs.evolve` start without it. Returns ``made``, which must never be changed:
    every later payload shares it."""
    set_kept(msg, (key, made))
    return made


def has_media(msg: Msg) -> bool:
    """Whether ``msg`` holds media, in its own blocks or in a tool result's: such a message's
    formatted form depends on bytes read or fetched when it is formatted, so it is not kept
    (the file may change; the bytes would stay in memory with the message). A formatter that
    passes every medium of a message by reference (a URL the model fetches) may keep it."""
    content = msg.content
    if content.__class__ is str:
        return False
    for block in content:
        if isinstance(block, MEDIA_BLOCKS):
            return True
        if (
            isinstance(block, ToolResultBlock)
            and not isinstance(block.output, str)
            and any(isinstance(part, MEDIA_BLOCKS) for part in block.output)
        ):
            return True
    return False


def is_http(source: Source) -> bool:
    return isinstance(source, URLSource) and source.url.startswith(("http://", "https://"))


def local_path(url: str) -> Path:
    """The file a ``file://`` URL or a plain path names."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    return Path(url)


def media_type_of(source: Source, default: str = "application/octet-stream") -> str:
    if isinstance(source, Base64Source):
        return source.media_type
    if isinstance(source, UnknownSource):
        media_type = source.fields.get("media_type")
        return media_type if isinstance(media_type, str) else default
    return source.media_type or mimetypes.guess_type(source.url)[0] or default


async def inline(source: Source, pool: HTTPPool | None = None) -> tuple[str, str]:
    """``(media type, base64 data)`` of a source: local files are read now, at format time;
    http(s) URLs are fetched through the kernel's pool."""
    if isinstance(source, Base64Source):
        return source.media_type, source.data
    if isinstance(source, UnknownSource):
        raise MediaError(
            f"cannot send media of source type {source.type!r}: no loaded plugin knows it "
            "(it was kept as written, by a newer plugin perhaps)"
        )
    if is_http(source):
        if pool is None:
            raise MediaError(f"cannot fetch {source.url}: no HTTP pool given to the formatter")
        data, content_type = await pool.fetch(source.url, MAX_MEDIA_BYTES)
        media_type = source.media_type or content_type or media_type_of(source)
        return media_type, base64.b64encode(data).decode("ascii")
    path = local_path(source.url)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MEDIA_BYTES + 1)  # what it holds now, not what stat said
    except OSError as exc:
        raise MediaError(f"cannot read media file {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_MEDIA_BYTES:
        raise MediaError(f"media file {str(path)!r} is larger than {MAX_MEDIA_BYTES} bytes")
    return media_type_of(source), base64.b64encode(data).decode("ascii")


def media_note(block: MediaBlock, why: str) -> str:
    """The text that stands in for media a model cannot take: never a silent drop."""
    source = block.source
    if isinstance(source, UnknownSource):
        where = f"a {source.type!r} source"
    else:
        where = source.url if isinstance(source, URLSource) else "inline data"
    return f"[{block.type} not shown to the model ({why}): {where}]"


def unsupported_media_reason(block: Block, capabilities: Capabilities) -> str | None:
    """Why ``block`` cannot go to a model with ``capabilities``, or None if it can."""
    media = isinstance(block, (ImageBlock, AudioBlock, VideoBlock))
    if media and block.type not in capabilities.media:
        return f"this model does not accept {block.type}"
    return None


def with_instruction(messages: Sequence[Msg], text: str) -> list[Msg]:
    """``messages`` with ``text`` added to the leading system message (one is made if there is
    none): how a provider asks in words for what its API cannot (a required tool call, a schema
    in plain JSON mode)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        if isinstance(first.content, str):
            content: str | list[Block] = f"{first.content}\n\n{text}" if first.content else text
        else:
            content = [*first.content, TextBlock(text)]
        return [attrs.evolve(first, content=content), *messages[1:]]
    return [Msg("system", text, "system"), *messages]


# -- multi-agent transcripts ------------------------------------------------------------------
def is_tool_message(msg: Msg) -> bool:
    return any(isinstance(b, (ToolUseBlock, ToolResultBlock)) for b in msg.blocks())


def transcript_segments(messages: Sequence[Msg]) -> list[list[Msg] | Msg]:
    """Split a multi-agent history for folding: system messages and messages with tool use or
    tool results stay native (a ``Msg``); every run of other messages becomes one segment (a
    list) to be rendered as a ``name: text`` transcript."""
    out: list[list[Msg] | Msg] = []
    for msg in messages:
        if msg.role == "system" or is_tool_message(msg):
            out.append(msg)
        elif out and isinstance(out[-1], list):
            out[-1].append(msg)
        else:
            out.append([msg])
    return out


def transcript_text(messages: Sequence[Msg]) -> str:
    """``name: text`` lines of a segment (media are added beside it by the formatter)."""
    return "\n".join(f"{m.name}: {m.text}" for m in messages)


# -- truncation -------------------------------------------------------------------------------
def estimate_tokens(msg: Msg) -> int:
    """A cheap token estimate (about four characters a token; media at a flat cost)."""
    total = 4
    for block in msg.blocks():
        if isinstance(block, TextBlock):
            total += len(block.text) // 4 + 1
        elif isinstance(block, ThinkingBlock):
            total += len(block.thinking) // 4 + 1
        elif isinstance(block, ToolUseBlock):
            total += len(str(block.input)) // 4 + 8
        elif isinstance(block, ToolResultBlock):
            out = block.output
            total += (len(out) if isinstance(out, str) else 64 * len(out)) // 4 + 8
        else:
            total += 256
    return total


def truncate(
    messages: Sequence[Msg], budget: int, count: Callable[[Msg], int] = estimate_tokens
) -> list[Msg]:
    """The newest messages that fit in ``budget`` tokens, in order. System messages are always
    kept, and a tool call is never separated from its results: they stay or go together."""
    groups = _tool_groups(messages)
    keep = [group[0].role == "system" for group in groups]
    used = sum(count(m) for group, kept in zip(groups, keep, strict=True) if kept for m in group)
    for i in range(len(groups) - 1, -1, -1):
        if keep[i]:
            continue
        cost = sum(count(m) for m in groups[i])
        if used + cost > budget:
            break  # everything older goes too: the kept history stays contiguous
        used += cost
        keep[i] = True
    return [m for group, kept in zip(groups, keep, strict=True) if kept for m in group]


def _tool_groups(messages: Sequence[Msg]) -> list[list[Msg]]:
    """Messages grouped so that a message with tool calls and the later messages holding their
    results form one group."""
    groups: list[list[Msg]] = []
    open_calls: set[str] = set()
    for msg in messages:
        blocks = msg.blocks()
        results = {b.id for b in blocks if isinstance(b, ToolResultBlock)}
        if open_calls and results & open_calls and msg.role != "system":
            groups[-1].append(msg)
            open_calls -= results
        else:
            groups.append([msg])
            open_calls = set()
        open_calls |= {b.id for b in blocks if isinstance(b, ToolUseBlock)}
    return groups
