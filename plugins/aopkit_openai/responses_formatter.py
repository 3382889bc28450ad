"""Messages → the ``instructions`` and ``input`` items of an OpenAI Responses API request.

Leading system messages become ``instructions``; later ones stay in place as system messages.
An assistant message becomes its output items in order: reasoning items as the API sent them
(``encrypted_content`` included), its text, and ``function_call`` items; each tool result is a
``function_call_output`` right after the calls. Output item ids (``fc_``, ``msg_``) go back only
beside the reasoning item they belong to (the API pairs them; an id without its reasoning, or a
reasoning item without its follower, is refused), and reasoning the API cannot resolve (another
provider's, or one without ``encrypted_content`` when nothing is stored) is left out. Tool
outputs are text: media a tool returned go in a user message after the outputs, as do images
of an assistant message (the API takes images from users only).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    VideoBlock,
)
from aopkit.formatting import (
    Formatter,
    add_message,
    media_note,
    transcript_segments,
    transcript_text,
    unsupported_media_reason,
)

from .formatter import call_arguments, image_url, tool_output

if TYPE_CHECKING:
    from aopkit.formatting import MediaBlock
    from aopkit.http import HTTPPool
    from aopkit.models import Capabilities

Item = dict[str, Any]

MEDIA = (ImageBlock, AudioBlock, VideoBlock)
REASONING = "reasoning_item"  # ThinkingBlock.extra: the reasoning item as the API sent it
ITEM_ID = "item_id"  # TextBlock / ToolUseBlock.extra: the id of the output item it came from
NATIVE = "openai-responses"  # UnknownBlock.extra["provider"]: an output item kept as sent


def input_text(text: str) -> Item:
    return {"type": "input_text", "text": text}


def sendable_reasoning(block: ThinkingBlock, stored: bool) -> Item | None:
    """The reasoning item to send back for ``block``, or None when the API could not resolve
    it: another provider's reasoning, or one with no ``encrypted_content`` when the server
    stored nothing it could look up by id."""
    item = block.extra.get(REASONING)
    if not isinstance(item, dict) or not item.get("id"):
        return None
    if not stored and not item.get("encrypted_content"):
        return None
    return item


def makes_output(block: Block) -> bool:
    """Whether ``block`` of an assistant message becomes an output item: what a reasoning item
    needs after it (the API refuses one with nothing following)."""
    if isinstance(block, TextBlock):
        return bool(block.text)
    if isinstance(block, UnknownBlock):
        return block.extra.get("provider") == NATIVE
    return isinstance(block, ToolUseBlock)  # (media become notes, which the model never made)


class ResponsesFormatter(Formatter):
    """One conversation, messages as they are (the API has no speaker names).
    ``stored``: the server keeps responses (``store=true``), so reasoning items without
    ``encrypted_content`` can still be sent back by id."""

    name = "openai-responses"

    def __init__(self, *, stored: bool = False) -> None:
        self.stored = stored

    def configured(self, *, stored: bool) -> ResponsesFormatter:
        """This formatter with the given option (itself when it is already so)."""
        return self if stored == self.stored else type(self)(stored=stored)

    async def format(
        self, messages: Sequence[Msg], *, capabilities: Capabilities, pool: HTTPPool | None = None
    ) -> dict[str, Any]:
        builder = _Builder(self.stored, capabilities, pool)
        key = self.key(capabilities)
        leading = True
        for part in transcript_segments(messages) if self.multi_agent else messages:
            if isinstance(part, list):
                await builder.transcript(part)
            elif leading and part.role == "system":
                await builder.instruction(part)  # where it stands decides: never kept
            else:
                await add_message(builder, part, key)  # formatted once, kept on the message
            leading = leading and not isinstance(part, list) and part.role == "system"
        return builder.payload()


class ResponsesMultiAgentFormatter(ResponsesFormatter):
    """Several named speakers: runs of their messages folded into one user message of
    ``name: text`` lines (media after them); tool exchanges stay native."""

    name = "openai-responses-multiagent"
    multi_agent = True


class _Builder:
    """Collects the instructions and the input items of one request."""

    def __init__(self, stored: bool, capabilities: Capabilities, pool: HTTPPool | None) -> None:
        self.stored = stored
        self.capabilities = capabilities
        self.pool = pool
        self.instructions: list[str] = []
        self.items: list[Item] = []
        self.pending: list[Item] = []  # media parts for a user message after the tool outputs

    async def recorded(self, msg: Msg) -> list[Item]:
        """Add ``msg``, a message without media, and return its items, made apart from the
        request's: media held back for a user message come only from media, so they are the
        same wherever it stands, and can be kept on the message and added again as they are."""
        items, pending = self.items, self.pending
        self.items, self.pending = [], []
        try:
            await self.message(msg)
            made = self.items
        finally:
            self.items, self.pending = items, pending
        self.replay(made)
        return made

    def replay(self, made: list[Item]) -> None:
        for item in made:
            self.emit(item)

    def payload(self) -> dict[str, Any]:
        self.flush()
        out: dict[str, Any] = {"input": self.items}
        if self.instructions:
            out["instructions"] = "\n\n".join(self.instructions)
        return out

    def flush(self) -> None:
        if self.pending:
            self.items.append({"role": "user", "content": self.pending.copy()})
            self.pending.clear()

    def emit(self, item: Item) -> None:
        """Add an item; media held back go first, unless it is a tool output (which follows
        the calls and the other outputs)."""
        if item.get("type") != "function_call_output":
            self.flush()
        self.items.append(item)

    async def instruction(self, msg: Msg) -> None:
        for block in msg.blocks():
            if isinstance(block, TextBlock):
                if block.text:
                    self.instructions.append(block.text)
            elif isinstance(block, MEDIA):
                self.instructions.append(media_note(block, "the instructions take text only"))
            else:
                await self.message(Msg(msg.name, [block], msg.role))  # tool exchanges stay native

    async def message(self, msg: Msg) -> None:
        if msg.role == "assistant":
            await self.assistant(msg)
            return
        parts: list[Item] = []
        calls: list[ToolUseBlock] = []
        results: list[ToolResultBlock] = []  # whatever the role: a result is a tool output
        for block in msg.blocks():
            if isinstance(block, ToolResultBlock):
                results.append(block)
            elif isinstance(block, ToolUseBlock):
                calls.append(block)
            elif isinstance(block, TextBlock):
                if block.text:
                    parts.append(input_text(block.text))
            elif isinstance(block, MEDIA):
                parts.append(await self.media(block, msg.role == "system"))
            elif not isinstance(block, ThinkingBlock):
                parts.append(input_text(f"[{block.type} block not shown to the model]"))
        own = {call.id for call in calls}
        for block in results:  # answers to earlier calls come first
            if block.id not in own:
                await self.tool_result(block)
        if parts:
            content: str | list[Item] = parts
            if all(p["type"] == "input_text" for p in parts):
                content = "\n".join(p["text"] for p in parts)
            self.emit({"role": msg.role, "content": content})
        for call in calls:  # a host may hold a call outside an assistant message
            self.emit(function_call(call, None))
        for block in results:  # answers to this message's own calls follow them
            if block.id in own:
                await self.tool_result(block)

    async def assistant(self, msg: Msg) -> None:
        """Output items in the order of the blocks; the text of one output item (or, without
        ids, consecutive text) is one message. Notes join the text before them, or else come
        last, so that nothing the model never made stands between a reasoning item and what
        follows it."""
        blocks = msg.blocks()
        reasoning = {
            id(b): item
            for n, b in enumerate(blocks)
            if isinstance(b, ThinkingBlock)
            and (item := sendable_reasoning(b, self.stored))
            and any(makes_output(later) for later in blocks[n + 1 :])
        }
        paired = bool(reasoning)  # ids go back only beside their reasoning
        run: list[str] = []  # the text of the message being built
        run_id: Any = None
        own: set[str] = set()
        later: list[ToolResultBlock] = []
        held: list[Item] = []  # media, for the next user message
        tail: list[str] = []  # notes with no text before them

        def close() -> None:
            if run:
                self.emit(output_message("\n".join(run), run_id if paired else None))
                run.clear()

        def add(text: str, item_id: Any) -> None:
            nonlocal run_id
            if run and item_id != run_id:
                close()
            run.append(text)
            run_id = item_id

        def note(text: str) -> None:
            # a note never joins an output item that goes back beside its reasoning: the
            # item must be what the model produced
            (run if run and not paired else tail).append(text)

        for block in blocks:
            if isinstance(block, TextBlock):
                if block.text:
                    add(block.text, block.extra.get(ITEM_ID))
            elif isinstance(block, MEDIA):
                part = await self.media(block, False)
                if part["type"] == "input_text":
                    note(part["text"])
                else:
                    note(f"[{block.type} shown in the next user message]")
                    held += [input_text(f"{block.type} from {msg.name}:"), part]
            elif isinstance(block, ToolResultBlock):
                if block.id in own:
                    later.append(block)
                else:
                    close()
                    await self.tool_result(block)
            elif isinstance(block, ThinkingBlock):
                if id(block) in reasoning:
                    close()
                    self.emit(dict(reasoning[id(block)]))
            elif isinstance(block, ToolUseBlock):
                close()
                own.add(block.id)
                self.emit(function_call(block, block.extra.get(ITEM_ID) if paired else None))
            elif isinstance(block, UnknownBlock) and block.extra.get("provider") == NATIVE:
                close()
                self.emit(dict(block.fields))
            else:
                note(f"[{block.type} block not shown to the model]")
        close()
        if tail:
            self.emit(output_message("\n".join(tail), None))
        self.pending += held
        for block in later:
            await self.tool_result(block)

    async def tool_result(self, block: ToolResultBlock) -> None:
        text, held = await tool_output(block, self.media, "input_text")
        self.pending += held
        self.emit({"type": "function_call_output", "call_id": block.id, "output": text})

    async def transcript(self, segment: list[Msg]) -> None:
        """Several speakers folded into one user message: ``name: text`` lines, then media."""
        parts = [input_text(transcript_text(segment))]
        for msg in segment:
            for block in msg.blocks():
                if isinstance(block, MEDIA):
                    parts.append(await self.media(block, False))
        self.emit({"role": "user", "content": parts})

    async def media(self, block: MediaBlock, system: bool = False) -> Item:
        """The content part for a media block, or a text part noting why it cannot go."""
        reason = unsupported_media_reason(block, self.capabilities)
        if reason is None and system:
            reason = "system messages take text only here"
        if reason is None and not isinstance(block, ImageBlock):
            reason = f"the Responses API does not take {block.type}"
        if reason is None:
            url, reason = await image_url(block, self.capabilities, self.pool)
        if reason is not None:
            return input_text(media_note(block, reason))
        return {"type": "input_image", "image_url": url, "detail": "auto"}


def output_message(text: str, item_id: str | None) -> Item:
    """Assistant text: plain, or with its id (beside its reasoning) as the output item."""
    if item_id is None:
        return {"role": "assistant", "content": text}
    part = {"type": "output_text", "text": text, "annotations": []}
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }


def function_call(block: ToolUseBlock, item_id: Any) -> Item:
    """A tool call as the API takes it back."""
    item: Item = {
        "type": "function_call",
        "call_id": block.id,
        "name": block.name,
        "arguments": call_arguments(block),
    }
    if isinstance(item_id, str) and item_id:
        item["id"] = item_id
    return item
