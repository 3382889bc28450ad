"""Messages → Gemini ``contents`` and ``systemInstruction``.

Gemini speaks in ``user`` / ``model`` turns of ``parts``; system messages go to
``systemInstruction``, consecutive turns of one role are merged, tool calls are ``functionCall``
parts and their results ``functionResponse`` parts placed first in the next user turn, in the
order of the calls. Thought signatures go back on the part they came with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import attrs

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
    Recording,
    inline,
    media_note,
    transcript_text,
    unsupported_media_reason,
)

if TYPE_CHECKING:
    from aopkit.http import HTTPPool
    from aopkit.models import Capabilities

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
GENERATED_ID_PREFIX = "gemini-call-"  # ids made up for calls Gemini sent without one
SIGNATURE = "thoughtSignature"
FILES_HOST = urlparse(DEFAULT_BASE_URL).netloc
VIDEO_HOSTS = frozenset({"www.youtube.com", "youtube.com", "youtu.be", "m.youtube.com"})

MediaBlock = ImageBlock | AudioBlock | VideoBlock


def wire_id(block_id: str) -> str | None:
    """The id to send to Gemini: none for ids made up here (Gemini never issued them)."""
    return None if block_id.startswith(GENERATED_ID_PREFIX) else block_id


def is_file_uri(url: str, block: Block) -> bool:
    """Media Gemini fetches itself (``fileData``): Files API URIs, and YouTube videos."""
    parsed = urlparse(url)
    if parsed.netloc == FILES_HOST and "/files/" in parsed.path:
        return True
    return isinstance(block, VideoBlock) and parsed.netloc in VIDEO_HOSTS


def _signed(part: dict[str, Any], block: Block) -> dict[str, Any]:
    if SIGNATURE in block.extra:
        part[SIGNATURE] = block.extra[SIGNATURE]
    return part


@attrs.define
class _Turn:
    role: str
    parts: list[dict[str, Any]] = attrs.field(factory=list)
    calls: list[ToolUseBlock] = attrs.field(factory=list)
    results: list[ToolResultBlock] = attrs.field(factory=list)


Part = dict[str, Any]
Added = tuple[str, Part | None, ToolUseBlock | ToolResultBlock | None]  # see _Builder.add


class _Builder(Recording):
    """Turns are merged and results matched to calls as they are added (through :meth:`add`),
    so what a message added fits anywhere again."""

    def __init__(self, capabilities: Capabilities, pool: HTTPPool | None) -> None:
        self.capabilities = capabilities
        self.pool = pool
        self.system: list[Part] = []
        self.turns: list[_Turn] = []

    def turn(self, role: str) -> _Turn:
        if not self.turns or self.turns[-1].role != role:
            self.turns.append(_Turn(role))
        return self.turns[-1]

    def replay(self, made: list[Added]) -> None:
        for added in made:
            self.add(*added)

    def add(
        self, role: str, part: Part | None, block: ToolUseBlock | ToolResultBlock | None = None
    ) -> None:
        """Add ``part`` to the system instruction (``role`` "system") or to a turn of ``role``,
        with the call it makes or the result it answers (placed when the turns are joined)."""
        self.note((role, part, block))
        if role == "system":
            self.system += [part] if part is not None else []
            return
        turn = self.turn(role)
        if part is not None:
            turn.parts.append(part)
        if isinstance(block, ToolUseBlock):
            turn.calls.append(block)
        elif block is not None:
            turn.results.append(block)

    async def message(self, msg: Msg) -> None:
        role = "model" if msg.role == "assistant" else "user"
        for block in msg.blocks():
            if msg.role == "system" and not isinstance(block, (ToolResultBlock, ToolUseBlock)):
                if isinstance(block, TextBlock) and block.text:
                    self.add("system", {"text": block.text})
                elif isinstance(block, MediaBlock):
                    note = media_note(block, "a system instruction holds text only")
                    self.add("system", {"text": note})
            elif isinstance(block, ToolResultBlock):  # a result is the user's, whoever holds it
                await self.result(block)
            elif isinstance(block, ToolUseBlock):  # calls are the model's, whoever stored them
                call: dict[str, Any] = {"name": block.name, "args": block.input}
                if (wid := wire_id(block.id)) is not None:
                    call["id"] = wid
                self.add("model", _signed({"functionCall": call}, block), block)
            elif (part := await self.part(block)) is not None:
                self.add(role, part)

    async def transcript(self, messages: list[Msg]) -> None:
        """Several speakers folded into one user turn: ``name: text`` lines, then their media."""
        turn = self.turn("user")
        turn.parts.append({"text": transcript_text(messages)})
        for msg in messages:
            for block in msg.blocks():
                if isinstance(block, MediaBlock):
                    turn.parts.append(await self.media(block))

    async def part(self, block: Block) -> dict[str, Any] | None:
        if isinstance(block, TextBlock):
            if not block.text and SIGNATURE not in block.extra:
                return None  # Gemini rejects empty text parts
            return _signed({"text": block.text}, block)
        if isinstance(block, ThinkingBlock):
            if not block.thinking and SIGNATURE not in block.extra:
                return None
            return _signed({"text": block.thinking, "thought": True}, block)
        if isinstance(block, MediaBlock):
            return await self.media(block)
        return None

    async def media(self, block: MediaBlock) -> dict[str, Any]:
        reason = unsupported_media_reason(block, self.capabilities)
        if reason is not None:
            return {"text": media_note(block, reason)}
        source = block.source
        if isinstance(source, URLSource) and is_file_uri(source.url, block):
            data: dict[str, Any] = {"fileUri": source.url}
            if source.media_type:
                data["mimeType"] = source.media_type
            return {"fileData": data}
        media_type, encoded = await inline(source, self.pool)
        return {"inlineData": {"mimeType": media_type, "data": encoded}}

    async def result(self, block: ToolResultBlock) -> None:
        """A tool result: its ``functionResponse`` is placed when the turns are joined; media it
        returned ride along as parts of the same user turn."""
        self.add("user", None, block)
        if not isinstance(block.output, str):
            for item in block.output:
                if isinstance(item, MediaBlock):
                    self.add("user", await self.media(item))

    def payload(self) -> dict[str, Any]:
        contents = []
        previous: _Turn | None = None
        for turn in self.turns:
            parts = turn.parts
            if turn.results:
                calls = previous.calls if previous is not None else []
                parts = _responses(turn.results, calls) + parts
            if parts:
                contents.append({"role": turn.role, "parts": parts})
            previous = turn
        payload: dict[str, Any] = {"contents": contents}
        if self.system:
            payload["systemInstruction"] = {"parts": self.system}
        return payload


def _responses(results: list[ToolResultBlock], calls: list[ToolUseBlock]) -> list[dict[str, Any]]:
    """``functionResponse`` parts in the order of the calls they answer (matched by id, else by
    name), contiguous; a result that answers no call of the turn before becomes text, since
    Gemini rejects a response without its call."""
    by_id = {c.id: (i, c) for i, c in enumerate(calls)}
    by_name: dict[str, tuple[int, ToolUseBlock]] = {}
    for i, call in enumerate(calls):
        by_name.setdefault(call.name, (i, call))
    matched: list[tuple[int, dict[str, Any]]] = []
    orphans: list[dict[str, Any]] = []
    for result in results:
        text = _output_text(result)
        found = by_id.get(result.id) or by_name.get(result.name)
        if found is None:
            orphans.append({"text": f"[result of tool {result.name} (call {result.id})]: {text}"})
            continue
        index, call = found
        response: dict[str, Any] = {
            "name": call.name,
            "response": {"error" if result.is_error else "output": text},
        }
        if (wid := wire_id(call.id)) is not None:
            response["id"] = wid
        matched.append((index, {"functionResponse": response}))
    matched.sort(key=lambda item: item[0])
    return [part for _, part in matched] + orphans


def _output_text(result: ToolResultBlock) -> str:
    if isinstance(result.output, str):
        return result.output
    return "\n".join(b.text for b in result.output if isinstance(b, TextBlock))


class GeminiFormatter(Formatter):
    """One model talking with a user: roles map one to one."""

    name = "gemini"

    def builder(self, capabilities: Capabilities, pool: HTTPPool | None) -> _Builder:
        return _Builder(capabilities, pool)


class GeminiMultiAgentFormatter(GeminiFormatter):
    """Several named speakers: their talk is folded into ``name: text`` transcripts in user
    turns; system messages and tool exchanges stay native."""

    name = "gemini-multiagent"
    multi_agent = True
