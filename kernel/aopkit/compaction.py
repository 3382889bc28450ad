"""Compaction: shrink a history that nears its token budget, keeping it valid for every provider.

Strategies (*compactors*) are plugins, registered by ``register_compactors``. The kernel hands
them the history and a :class:`Goal`, and checks what they return before it replaces anything:
a tool call is never separated from its result, and the task message (the first user message
that is not tool results) is never lost. A strategy that breaks either rule is an error naming
it, and the history stays as it was.

Built in: ``drop-tool-outputs`` (old tool results become a short note), ``truncate`` (the
oldest exchanges go) and ``summarise`` (the oldest exchanges become one summary message, written
by a model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .blocks import Block, TextBlock, ToolResultBlock, ToolUseBlock
from .errors import AopkitError, ConfigurationError
from .events import Compacted
from .message import Msg, _chars
from .usage import estimate_tokens

if TYPE_CHECKING:
    from .kernel import Kernel
    from .memory import Memory
    from .models import ChatModel, ToolSpec

DEFAULT_STRATEGIES = ("drop-tool-outputs", "truncate")


class CompactionError(AopkitError):
    """A compactor returned a history that breaks the rules; the history is left unchanged."""


class Compactor(Protocol):
    async def compact(self, history: list[Msg], goal: Goal) -> list[Msg]:
        """A shorter ``history``; it may stop short of the goal (the next strategy goes on)."""


@attrs.frozen
class Goal:
    """What a compactor aims at: ``tokens`` for the history (beside ``fixed``, what it cannot
    shrink: the system prompt and tool schemas); ``task``, the id of the message to keep;
    ``recent``, how many of the last exchanges to leave as they are; ``model`` to summarise."""

    tokens: int
    task: str | None
    recent: int
    model: ChatModel
    fixed: int = 0

    def fits(self, history: Sequence[Msg]) -> bool:
        return self.fixed + estimate_tokens(history) <= self.tokens

    def movable(self, history: list[Msg]) -> list[list[Msg]]:
        """The exchanges a compactor may change, oldest first: not the task's, not the recent."""
        units = exchanges(history)
        if self.recent:
            units = units[: -self.recent]
        return [u for u in units if not any(m.id == self.task for m in u)]


@attrs.frozen
class Compaction:
    """An agent's compaction policy: when its history (with system prompt and tool schemas)
    reaches ``start`` of ``budget`` tokens, ``strategies`` run in order until it fits in
    ``target`` of it. ``recent`` last exchanges are never touched; ``model`` summarises
    (default: the agent's own)."""

    budget: int
    strategies: tuple[str | Compactor, ...] = DEFAULT_STRATEGIES
    start: float = 0.9
    target: float = 0.6
    recent: int = 2
    model: ChatModel | str | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ConfigurationError(
                f"Compaction: budget must be a positive token count, got {self.budget!r}"
            )
        if not 0 < self.target <= self.start <= 1:
            raise ConfigurationError(
                f"Compaction: need 0 < target <= start <= 1, got target={self.target!r}, "
                f"start={self.start!r}"
            )
        if isinstance(self.recent, bool) or not isinstance(self.recent, int) or self.recent < 0:
            raise ConfigurationError(
                f"Compaction: recent must be a whole number >= 0, got {self.recent!r}"
            )
        if not self.strategies or isinstance(self.strategies, str):
            raise ConfigurationError(
                "Compaction: strategies must be a non-empty tuple of names or compactors"
            )


def task_message(history: Sequence[Msg]) -> Msg | None:
    """The message that set the task: one marked ``metadata["task"]``, else the first user
    message that is not tool results."""
    marked = next((m for m in history if m.metadata.get("task")), None)
    if marked is not None:
        return marked
    return next((m for m in history if m.role == "user" and not m.blocks(ToolResultBlock)), None)


def exchanges(history: Sequence[Msg]) -> list[list[Msg]]:
    """The history cut where it can be cut: a message that calls tools stays with the messages
    that answer its calls."""
    units: list[list[Msg]] = []
    pending: set[str] = set()
    for msg in history:
        answers = {b.id for b in msg.blocks(ToolResultBlock)}
        if units and pending and answers & pending:
            units[-1].append(msg)
            pending -= answers
        else:
            units.append([msg])
            pending = set()
        pending |= {b.id for b in msg.blocks(ToolUseBlock)}
    return units


def flat(units: Sequence[Sequence[Msg]]) -> list[Msg]:
    return [m for unit in units for m in unit]


def check(before: Sequence[Msg], after: Sequence[Msg], task: str | None, by: str) -> None:
    """Refuse a compacted history that lost the task message or split a tool exchange."""
    if task is not None and not any(m.id == task for m in after):
        raise CompactionError(f"compactor {by!r} dropped the task message; nothing was changed")
    if not isinstance(after, list) or not all(isinstance(m, Msg) for m in after):
        raise CompactionError(
            f"compactor {by!r} must return a list of messages; nothing was changed"
        )
    paired = _paired(before)
    uses, results = _ids(after, ToolUseBlock), _ids(after, ToolResultBlock)
    for call in sorted(paired):
        if (call in uses) != (call in results):
            raise CompactionError(
                f"compactor {by!r} separated tool call {call!r} from its result; "
                "nothing was changed"
            )
    for unit in exchanges(after):
        called = {b.id for b in unit[0].blocks(ToolUseBlock)}
        answered = {b.id for m in unit[1:] for b in m.blocks(ToolResultBlock)}
        if called & paired != answered & paired:
            raise CompactionError(
                f"compactor {by!r} moved a tool result away from its call; nothing was changed"
            )


def _ids(history: Sequence[Msg], kind: type[ToolUseBlock] | type[ToolResultBlock]) -> set[str]:
    return {b.id for m in history for b in m.blocks(kind)}


def _paired(history: Sequence[Msg]) -> set[str]:
    return _ids(history, ToolUseBlock) & _ids(history, ToolResultBlock)


async def compact(
    kernel: Kernel,
    agent: str,
    history: list[Msg],
    policy: Compaction,
    *,
    model: ChatModel,
    fixed: Sequence[Msg] = (),
    tools: Sequence[ToolSpec] = (),
) -> list[Msg] | None:
    """The compacted history when ``history`` (with ``fixed`` messages and ``tools``) reached
    the policy's start, else None. Each strategy's result is checked before the next runs."""
    fixed_tokens = estimate_tokens(fixed, tools)
    before = fixed_tokens + estimate_tokens(history)
    if before < policy.start * policy.budget:
        return None
    task = task_message(history)
    summariser = kernel.model(policy.model) if isinstance(policy.model, str) else policy.model
    goal = Goal(
        tokens=int(policy.target * policy.budget),
        task=task.id if task is not None else None,
        recent=policy.recent,
        model=summariser or model,
        fixed=fixed_tokens,
    )
    current, used = history, []
    for strategy in policy.strategies:
        name = strategy if isinstance(strategy, str) else type(strategy).__name__
        compactor = kernel.compactors[strategy] if isinstance(strategy, str) else strategy
        result = await compactor.compact(list(current), goal)
        check(current, result, goal.task, name)
        if estimate_tokens(result) < estimate_tokens(current):  # a longer "summary" is no gain
            current = result
            used.append(name)
        if goal.fits(current):
            break
    if kernel.observed:
        kept = {m.id for m in history}
        kernel.emit(
            Compacted(
                agent=agent,
                strategies=tuple(used),
                tokens_before=before,
                tokens_after=fixed_tokens + estimate_tokens(current),
                removed=tuple(m.id for m in history if m.id not in {n.id for n in current}),
                added=tuple(m for m in current if m.id not in kept),
            )
        )
    return current


def journal_entry(kernel: Kernel, before: Sequence[Msg], after: Sequence[Msg]) -> dict[str, Any]:
    """What a durable run journals of a compaction: the ids kept, the messages added."""
    known = {m.id for m in before}
    return {
        "ids": [m.id for m in after],
        "added": [kernel.codec.dump(m) for m in after if m.id not in known],
    }


def replay_compaction(run: str, memory: Memory, entry: dict[str, Any], kernel: Kernel) -> None:
    """Apply a journaled compaction to ``memory`` (rebuilt by the replay up to that point)."""
    from .durable import Diverged, read

    found = {m.id: m for m in memory}
    added = read(run, entry, lambda e: [kernel.codec.load(d, Msg) for d in e["added"]])
    found.update((m.id, m) for m in added)
    ids = read(run, entry, lambda e: [str(i) for i in e["ids"]])
    missing = [i for i in ids if i not in found]
    if missing:
        raise Diverged(
            f"run {run!r}: a journaled compaction keeps messages {missing[:3]} the replayed "
            "memory does not have; resume with the same program"
        )
    memory.clear()
    memory.extend(found[i] for i in ids)


@attrs.frozen
class Truncate:
    """Drop the oldest exchanges (never the task message, never the recent ones)."""

    async def compact(self, history: list[Msg], goal: Goal) -> list[Msg]:
        dropped: set[str] = set()
        kept = history
        for unit in goal.movable(history):
            if goal.fits(kept):
                break
            dropped |= {m.id for m in unit}
            kept = [m for m in history if m.id not in dropped]
        return kept


@attrs.frozen
class DropToolOutputs:
    """Replace the outputs of old tool calls, oldest first, by a note of what was dropped: the
    call and its result stay paired, the model knows the call happened."""

    async def compact(self, history: list[Msg], goal: Goal) -> list[Msg]:
        replaced: dict[str, Msg] = {}
        for unit in goal.movable(history):
            if goal.fits([replaced.get(m.id, m) for m in history]):
                break
            for msg in unit:
                if msg.blocks(ToolResultBlock):
                    replaced[msg.id] = _noted(msg)
        return [replaced.get(m.id, m) for m in history]


def _noted(msg: Msg) -> Msg:
    """``msg`` with each tool output longer than its note replaced by the note."""
    content = msg.content
    assert isinstance(content, list)  # it has tool result blocks
    blocks: list[Block] = [_note(b) if isinstance(b, ToolResultBlock) else b for b in content]
    if blocks == content:
        return msg
    return Msg(msg.name, blocks, msg.role, metadata={**msg.metadata, "compacted": msg.id})


def _note(block: ToolResultBlock) -> ToolResultBlock:
    output = block.output
    size = len(output) if isinstance(output, str) else _chars(output)
    note = f"[output of {block.name} dropped to save context: {size} characters]"
    return attrs.evolve(block, output=note) if len(note) < size else block


SUMMARY_PROMPT = (
    "You compact a conversation that grew too long. Summarise the part below so that the agent "
    "can go on with its task: keep facts, decisions, results of tool calls that matter, and "
    "open questions. Answer with the summary only."
)


@attrs.frozen
class Summarise:
    """Replace the oldest exchanges by one summary written by the goal's model: a user message
    named ``summary`` (``metadata["compaction"] == "summary"``, ``"replaces"``: the ids)."""

    async def compact(self, history: list[Msg], goal: Goal) -> list[Msg]:
        chosen: list[Msg] = []
        rest = history
        for unit in goal.movable(history):
            if goal.fits(rest):
                break
            chosen += unit
            gone = {m.id for m in chosen}
            rest = [m for m in history if m.id not in gone]
        if not chosen:
            return history
        response: Any = await goal.model(
            [Msg("system", SUMMARY_PROMPT, "system"), Msg("user", transcript(chosen), "user")]
        )
        text = "".join(b.text for b in response.content if isinstance(b, TextBlock)).strip()
        summary = Msg(
            "summary",
            f"Summary of the earlier conversation: {text}",
            "user",
            metadata={"compaction": "summary", "replaces": [m.id for m in chosen]},
        )
        at = history.index(chosen[0])
        gone = {m.id for m in chosen}
        before = [m for m in history[:at] if m.id not in gone]
        return [*before, summary, *(m for m in history[at:] if m.id not in gone)]


def transcript(messages: Sequence[Msg]) -> str:
    """Messages as plain text, tool calls and results included, for a model to read."""
    lines = []
    for msg in messages:
        if isinstance(msg.content, str):
            lines.append(f"{msg.name}: {msg.content}")
            continue
        for block in msg.content:
            if isinstance(block, TextBlock):
                lines.append(f"{msg.name}: {block.text}")
            elif isinstance(block, ToolUseBlock):
                lines.append(f"{msg.name} called {block.name}({block.raw_input or block.input})")
            elif isinstance(block, ToolResultBlock):
                output = block.output if isinstance(block.output, str) else "[media]"
                lines.append(f"{block.name} returned: {output}")
    return "\n".join(lines)


BUILTIN_COMPACTORS: dict[str, Compactor] = {
    "truncate": Truncate(),
    "drop-tool-outputs": DropToolOutputs(),
    "summarise": Summarise(),
}
