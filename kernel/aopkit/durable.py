"""Durable runs: a journal of every message, model answer and tool result, so that a run
killed at any point resumes where it stopped.

``async with durable(store, "run-1"):`` (or ``MsgHub(..., durable=store, run="run-1")``) makes
the work inside it durable. Each agent call is journaled as it happens: its input before the
agent remembers it, each model answer and each tool result before it is used, each tool step
(the calls with their results) before it enters memory, the reply before it is remembered and
broadcast. Running the same program again under the same run id replays: a finished call
gives its journaled reply (and steps) without running, an unfinished one gets its journaled
model answers and tool results instead of calling models and tools again, and goes on live
from where the journal ends. Memories are rebuilt by the replay, so nothing is lost or doubled.

Journal keys follow the program's structure, not the clock: ``<agent>/<n>`` is the agent's
n-th call in the run, ``<agent>/<n>/model<k>`` its k-th model answer in that call, and so on.
The program must therefore make the same calls in the same order when it is run again (it is
deterministic apart from models and tools), and agent names must be unique within a run.
One process at a time works in a run: the block holds the store's claim on it (see
:class:`aopkit.session.ClaimingStore`), which dies with the process.
"""

from __future__ import annotations

import contextvars
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs

from .blocks import Block, ToolResultBlock
from .errors import AopkitError, Claimed
from .message import Msg
from .session import JournalStore, check_run_id, claim_of

if TYPE_CHECKING:
    from .blocks import ToolUseBlock
    from .kernel import Kernel
    from .memory import Memory
    from .models import ChatResponse
    from .toolkit import Tool

T = TypeVar("T")
Entry = dict[str, Any]


class DurableError(AopkitError):
    """A durable run cannot go on: its journal and the program disagree, or a decision is
    missing. Nothing journaled is changed."""


class RunInUse(DurableError):
    """Another process (or another task of this one, through another store object) holds the
    run: it is being resumed there now. Nothing was run or journaled here."""


class Diverged(DurableError):
    """The program, run again, did not do what its journal says it did."""


class ToolInterrupted(DurableError):
    """A tool that is not idempotent was interrupted mid-call (its start is journaled, its
    result is not) and no one decided what to do: it may have had its effects, so it is not
    run again. ``call`` is the interrupted call."""

    def __init__(self, run: str, call: PendingCall) -> None:
        self.call = call
        super().__init__(
            f"run {run!r}: tool {call.tool!r} (call {call.id}) was interrupted mid-call and "
            "is not idempotent; it may have had its effects, so it is not run again. Resume "
            "with an escalate hook (or on a terminal) to retry it or give its result"
        )


@attrs.frozen
class PendingCall:
    """A tool call waiting for a decision: its id, the tool and the model's arguments."""

    id: str
    tool: str
    arguments: Mapping[str, Any]


@attrs.frozen
class Decision:
    """A person's decision on a tool call: ``approve`` it, ``reject`` it (``reason`` is what
    the model is told), or ``edit`` it (run it with ``arguments`` instead)."""

    action: Literal["approve", "reject", "edit"]
    reason: str = ""
    arguments: Mapping[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        if self.action not in ("approve", "reject", "edit"):
            raise AopkitError(
                f"Decision: action must be approve, reject or edit, got {self.action!r}"
            )
        if (self.action == "edit") != isinstance(self.arguments, Mapping):
            raise AopkitError("Decision: give arguments (a dict) with edit, and only with edit")


def approve() -> Decision:
    return Decision("approve")


def reject(reason: str) -> Decision:
    return Decision("reject", reason=reason)


def edit(arguments: Mapping[str, Any]) -> Decision:
    return Decision("edit", arguments=dict(arguments))


@attrs.frozen
class ApprovalRequest:
    """Tool calls an agent wants to make that need a person's approval; what every front end
    (terminal, Studio, a served protocol) shows. Answer with a :class:`Decision` for all of the
    calls, or a dict of decisions by call id covering each."""

    agent: str
    calls: tuple[PendingCall, ...]
    key: str
    run: str | None = None

    def as_data(self) -> dict[str, Any]:
        """The request as JSON-ready data: what a journal keeps, and what a program or a page
        reads instead of :meth:`describe`'s text."""
        calls = [{"id": c.id, "tool": c.tool, "arguments": dict(c.arguments)} for c in self.calls]
        return {"agent": self.agent, "run": self.run, "key": self.key, "calls": calls}

    def describe(self) -> str:
        lines = [f"agent {self.agent!r} asks to run:"]
        lines += [
            f"  {c.tool}({json.dumps(dict(c.arguments), ensure_ascii=False)}) [{c.id}]"
            for c in self.calls
        ]
        return "\n".join(lines)

    def decisions(self, answer: object) -> dict[str, Decision]:
        """``answer`` as one decision per call, or an error saying what is wrong with it."""
        ids = [c.id for c in self.calls]
        if isinstance(answer, Decision):
            return dict.fromkeys(ids, answer)
        if isinstance(answer, Mapping) and all(isinstance(d, Decision) for d in answer.values()):
            missing, unknown = set(ids) - set(answer), set(answer) - set(ids)
            if not missing and not unknown:
                return {i: answer[i] for i in ids}
            raise AopkitError(
                f"approval {self.key}: decisions must cover exactly the calls {ids}"
                f" (missing {sorted(missing)}, unknown {sorted(unknown)})"
            )
        raise AopkitError(
            f"approval {self.key}: expected a Decision or a dict of Decisions by call id, "
            f"got {type(answer).__name__}"
        )


class AwaitingApproval(AopkitError):
    """The run paused: ``request`` waits for a decision. In a durable run the request is in
    the journal: answer it with :func:`answer_approval` (from any process) and resume."""

    def __init__(self, request: ApprovalRequest) -> None:
        self.request = request
        where = f"run {request.run!r}" if request.run else "the run"
        super().__init__(f"{where} waits for approval: {request.describe()}")


def _load_request(run: str, key: str, data: Entry) -> ApprovalRequest:
    calls = tuple(PendingCall(c["id"], c["tool"], c["arguments"]) for c in data["calls"])
    return ApprovalRequest(data["agent"], calls, key, run)


def _dump_decisions(decisions: Mapping[str, Decision]) -> Entry:
    return {i: attrs.asdict(d) for i, d in decisions.items()}


def _load_decisions(data: Entry) -> dict[str, Decision]:
    return {
        i: Decision(d["action"], d.get("reason", ""), d.get("arguments")) for i, d in data.items()
    }


def read(run: str, entry: Entry, load: Callable[[Any], T]) -> T:
    """``load`` applied to a journal entry, or a :class:`DurableError` naming the damaged entry
    (a journal written by hand, or by another version) instead of a KeyError or TypeError."""
    try:
        return load(entry)
    except (KeyError, TypeError, IndexError, ValueError, AopkitError) as exc:
        raise DurableError(
            f"run {run!r}: journal entry {entry.get('kind')!r} {entry.get('key')!r} is damaged "
            f"({type(exc).__name__}: {exc}); the journal is left as it is"
        ) from None


def _checked(run: str, entries: list[Entry]) -> list[Entry]:
    """``entries`` if each has a string ``kind`` and ``key``; else a :class:`DurableError`
    naming the first damaged one (garbage written by hand, or by another program)."""
    for number, entry in enumerate(entries):
        if not isinstance(entry.get("kind"), str) or not isinstance(entry.get("key"), str):
            raise DurableError(
                f"run {run!r}: journal entry {number} is damaged (its kind and key must be "
                f"strings): {str(entry)[:120]}; the journal is left as it is"
            )
    return entries


class Run:
    """One durable run: its journal as loaded, and what this process appends to it."""

    def __init__(self, store: JournalStore, run: str, entries: list[Entry]) -> None:
        self.store = store
        self.id = run
        self._journaled: dict[tuple[str, str], Entry] = {}
        for entry in entries:
            self._journaled.setdefault((entry.get("kind", ""), entry.get("key", "")), entry)
        self._counters: dict[str, int] = {}

    def next_key(self, scope: str) -> str:
        """The next key under ``scope``: ``scope/0``, ``scope/1``..."""
        number = self._counters.get(scope, 0)
        self._counters[scope] = number + 1
        return f"{scope}/{number}"

    def journaled(self, kind: str, key: str) -> Entry | None:
        return self._journaled.get((kind, key))

    async def record(self, kind: str, key: str, **data: Any) -> Entry:
        """Append an entry (durable when this returns) and remember it."""
        entry = {"kind": kind, "key": key, **data}
        await self.store.append(self.id, [entry])
        self._journaled.setdefault((kind, key), entry)
        return entry

    async def message(self, kind: str, key: str, msg: Msg, kernel: Kernel, *, check: bool) -> Msg:
        """``msg`` journaled, or its journaled copy (same id) on replay; with ``check``, a copy
        whose content differs means the program changed."""
        found = self.journaled(kind, key)
        if found is None:
            await self.record(kind, key, msg=kernel.codec.dump(msg))
            return msg
        journaled = read(self.id, found, lambda e: kernel.codec.load(e["msg"], Msg))
        if check and _content(kernel, journaled) != _content(kernel, msg):
            raise Diverged(
                f"run {self.id!r}, {kind} {key}: the program now gives {msg.text[:80]!r} where "
                f"its journal has {journaled.text[:80]!r}; resume with the same program"
            )
        return journaled

    async def messages(
        self, key: str, given: Msg | Sequence[Msg] | None, kernel: Kernel
    ) -> Msg | list[Msg] | None:
        """A call's input journaled (or its journaled copies on replay)."""
        if given is None:
            return None
        if isinstance(given, Msg):
            return await self.message("input", key, given, kernel, check=True)
        return [
            await self.message("input", f"{key}/{i}", m, kernel, check=True)
            for i, m in enumerate(given)
        ]


def _content(kernel: Kernel, msg: Msg) -> Any:
    data = kernel.codec.dump(msg)
    return {k: v for k, v in data.items() if k not in ("id", "timestamp")}


_OPEN: set[tuple[str, str]] = set()  # (store, run) of the durable blocks open in this process
_RUN: contextvars.ContextVar[Run | None] = contextvars.ContextVar("aopkit_run", default=None)
_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("aopkit_call", default=None)


def current_run() -> Run | None:
    """The durable run the current task works in, if any."""
    return _RUN.get()


@asynccontextmanager
async def durable(store: JournalStore, run: str) -> AsyncIterator[Run]:
    """Make the work inside the block (this task's and the tasks it starts) durable under
    ``run``; the journal so far is loaded first, so the block replays what it records. The
    run is held for the block: opened elsewhere at the same time (another block of this
    process, or another process on a store that can claim) it is refused (:class:`RunInUse`)."""
    check_run_id(run)
    if not callable(getattr(store, "append", None)) or not callable(
        getattr(store, "journal", None)
    ):
        raise DurableError(f"{store!r} keeps no journals (it has no append and journal)")
    where = (repr(store), run)
    if where in _OPEN:
        raise DurableError(
            f"run {run!r} is already open in this process ({store!r}): resumed twice at once, "
            "both would run its models and tools live and journal them twice; wait for the "
            "first to end"
        )
    _OPEN.add(where)
    try:
        async with _claimed(store, run):
            found = Run(store, run, _checked(run, await store.journal(run)))
            token = _RUN.set(found)
            try:
                yield found
            finally:
                _RUN.reset(token)
    finally:
        _OPEN.discard(where)


@asynccontextmanager
async def _claimed(store: JournalStore, run: str) -> AsyncIterator[None]:
    """The store's claim on ``run`` held for the block, if the store can claim (see
    :class:`~aopkit.session.ClaimingStore`): a second process is refused at once."""
    claiming = claim_of(store)
    async with AsyncExitStack() as held:
        if claiming is not None:
            try:
                await held.enter_async_context(claiming.claim(f"run:{run}"))
            except Claimed:
                raise RunInUse(
                    f"run {run!r} is in use: another process resumes it now (its claim in "
                    f"{store!r} is held); resuming it here too would run its models and tools "
                    "twice. Try again once that process has ended (a process that dies frees "
                    "the run)"
                ) from None
        yield


async def resume(store: JournalStore, run: str, program: Callable[[], Awaitable[T]]) -> T:
    """Run ``program`` (an async function building its agents and running them) durably
    under ``run``: what the journal holds is replayed, the rest runs live."""
    async with durable(store, run):
        return await program()


class Call:
    """One agent call in a durable run: the keys of what it journals."""

    def __init__(self, run: Run, key: str) -> None:
        self.run = run
        self.key = key
        self._counters: dict[str, int] = {}

    def next_key(self, kind: str) -> str:
        number = self._counters.get(kind, 0)
        self._counters[kind] = number + 1
        return f"{self.key}/{kind}{number}"

    def replay(self, memory: Memory, kernel: Kernel) -> None:
        """Put back what this (finished) call did to ``memory``, in order: before each model
        answer a compaction (if one was journaled), after each but the last a step."""
        from .compaction import replay_compaction

        for number in itertools.count():
            compacted = self.run.journaled("compaction", f"{self.key}/compaction{number}")
            if compacted is not None:
                replay_compaction(self.run.id, memory, compacted, kernel)
            entry = self.run.journaled("step", f"{self.key}/step{number}")
            if entry is None:
                return
            memory.extend(
                read(self.run.id, entry, lambda e: [kernel.codec.load(m, Msg) for m in e["msgs"]])
            )


def current_call() -> Call | None:
    return _CALL.get()


def enter_call(call: Call | None) -> None:
    """Make ``call`` the current one, in the context a reply runs in (a copy of its
    caller's); outside every durable run there is nothing to set."""
    if call is not None or _CALL.get() is not None:
        _CALL.set(call)


async def model_answer(
    kernel: Kernel, model: str, ask: Callable[[], Awaitable[ChatResponse]]
) -> tuple[ChatResponse, bool]:
    """The model's answer: journaled before it is used, or replayed from the journal (then
    True, and charged to the usage accounts as the call was) instead of asking ``model``
    again."""
    call = _CALL.get()
    if call is None:  # not in a durable run: the common case, on every model call's path
        return await ask(), False
    key = call.next_key("model")
    found = call.run.journaled("model", key)
    if found is not None:
        from .models import ChatResponse

        answer = read(call.run.id, found, lambda e: kernel.codec.load(e["answer"], ChatResponse))
        kernel.usage.replayed(model, answer.usage)
        return answer, True
    answer = await ask()
    await call.run.record("model", key, answer=kernel.codec.dump(answer))
    return answer, False


async def tool_result(
    kernel: Kernel,
    use: ToolUseBlock,
    tool: Tool | None,
    run_tool: Callable[[ToolUseBlock], Awaitable[ToolResultBlock]],
) -> ToolResultBlock:
    """A tool call's result: replayed from the journal, or run and journaled. A tool that is
    not idempotent has its start journaled first; found started but not finished, it goes to
    the escalate hook (retry it, or give its result) instead of running again."""
    call = _CALL.get()
    if call is None:  # not in a durable run: the common case, on every tool call's path
        return await run_tool(use)
    run = call.run
    key = f"{call.key}/tool/{use.id}"
    found = run.journaled("tool", key)
    if found is not None:
        result = read(run.id, found, lambda e: kernel.codec.load(e["result"], Block))
        if not isinstance(result, ToolResultBlock):
            raise DurableError(f"run {run.id!r}, tool {key}: the journal holds no tool result")
        return result
    if tool is not None and not tool.idempotent:
        if run.journaled("tool-started", key) is not None:
            decided = await _interrupted(kernel, run, use)
            if decided is not None:
                await run.record("tool", key, result=kernel.codec.dump(decided))
                return decided
        await run.record("tool-started", key)
    result = await run_tool(use)
    await run.record("tool", key, result=kernel.codec.dump(result))
    return result


async def _interrupted(kernel: Kernel, run: Run, use: ToolUseBlock) -> ToolResultBlock | None:
    """Ask the escalate hook about an interrupted call: its result (``answer``), or None to
    run it again (``retry``); no decision raises :class:`ToolInterrupted`."""
    from .faults import DEFAULT_POLICY, Fault, Incident, escalate

    pending = PendingCall(use.id, use.name, dict(use.input))
    incident = Incident(
        model=f"tool {use.name}",
        target=f"result of tool {use.name}",
        reason=f"interrupted mid-call in run {run.id!r}; it is not idempotent",
        request=kernel.secrets.redact(json.dumps(attrs.asdict(pending), default=str)),
    )
    fault = Fault("interrupted", f"tool {use.name}", incident.reason, None, None)
    resolution = await escalate(kernel, incident, fault, DEFAULT_POLICY)
    if resolution is None:
        raise ToolInterrupted(run.id, pending)
    if resolution.action == "retry":
        return None
    answer = resolution.answer
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    return ToolResultBlock(use.id, use.name, text)


async def approvals(
    kernel: Kernel, agent: str, uses: Sequence[ToolUseBlock]
) -> dict[str, Decision]:
    """Decisions on tool calls that need approval: from the journal, else from the escalate
    hook (or the terminal). With no decision the run pauses: :class:`AwaitingApproval` (in a
    durable run, the request is journaled first, so it can be answered after a restart)."""
    call = _CALL.get()
    run = call.run if call is not None else None
    key = call.next_key("approval") if call is not None else "approval"
    pending = tuple(PendingCall(u.id, u.name, dict(u.input)) for u in uses)
    request = ApprovalRequest(agent, pending, key, run.id if run else None)
    if run is not None:
        answered = run.journaled("approved", key)
        if answered is not None:
            return read(run.id, answered, lambda e: _load_decisions(e["decisions"]))
        if run.journaled("approval", key) is None:
            await run.record("approval", key, request=request.as_data())
    answer = await kernel.escalate(request)
    if answer is None:
        from .faults import _terminal_attached

        if _terminal_attached():
            answer = await ask_approval_on_terminal(request)
    if answer is None:
        raise AwaitingApproval(request)
    decisions = request.decisions(answer)
    if run is not None:
        await run.record("approved", key, decisions=_dump_decisions(decisions))
    return decisions


async def pending_approval(store: JournalStore, run: str) -> ApprovalRequest | None:
    """The approval a paused run waits for, read from its journal (None if none)."""
    entries = _checked(run, await store.journal(run))
    answered = {e.get("key") for e in entries if e.get("kind") == "approved"}
    for entry in reversed(entries):
        if entry.get("kind") == "approval" and entry.get("key") not in answered:
            return read(run, entry, lambda e: _load_request(run, e["key"], e["request"]))
    return None


async def answer_approval(
    store: JournalStore, run: str, answer: Decision | Mapping[str, Decision]
) -> ApprovalRequest:
    """Journal a decision on the approval ``run`` waits for (from any process); resuming the
    run then goes on with it. Returns the request answered."""
    request = await pending_approval(store, run)
    if request is None:
        raise DurableError(f"run {run!r} waits for no approval")
    decisions = json.loads(json.dumps(_dump_decisions(request.decisions(answer))))
    await store.append(run, [{"kind": "approved", "key": request.key, "decisions": decisions}])
    first = next(
        e
        for e in await store.journal(run)
        if e.get("kind") == "approved" and e.get("key") == request.key
    )
    if first.get("decisions") != decisions:
        raise DurableError(
            f"run {run!r}: approval {request.key} was answered otherwise by someone else at the "
            "same time; the run goes on with that answer, not this one"
        )
    return request


async def ask_approval_on_terminal(request: ApprovalRequest) -> dict[str, Decision]:
    """Ask a person at the terminal about each call: approve, reject (with a reason) or edit."""
    from .terminal import ask

    print(request.describe(), flush=True)
    decisions: dict[str, Decision] = {}
    for call in request.calls:
        while call.id not in decisions:
            choice = (
                await ask(f"{call.tool} [{call.id}]: [a]pprove, [r]eject or [e]dit? ")
            ).strip()
            kind = choice[:1].lower()
            if kind == "a":
                decisions[call.id] = approve()
            elif kind == "r":
                decisions[call.id] = reject(await ask("reason (the model reads it): "))
            elif kind == "e":
                text = await ask("arguments (a JSON object): ")
                try:
                    arguments = json.loads(text)
                except ValueError as exc:
                    print(f"not JSON ({exc}); try again", flush=True)
                    continue
                if isinstance(arguments, dict):
                    decisions[call.id] = edit(arguments)
                else:
                    print("not a JSON object; try again", flush=True)
    return decisions
