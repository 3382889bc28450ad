"""Fault tolerance tiers 2-4 around a model call whose output must become a value.

1. accessibility errors are retried inside the model call (see :mod:`aopkit.retry`);
2. rule-resolvable errors (not JSON, wrong shape) go to correctors: no model call;
3. model-resolvable errors (valid but wrong, or rejected by a reviewing critic) go to critics,
   in bounded rounds;
4. what is still unresolved becomes an :class:`Incident`: logged at CHAT level, persisted, and
   handed to a human through the ``escalate`` hook (retry, answer, or abort).

Every fault is recorded in the kernel's :class:`FaultReport` with the tier that resolved it, the
model calls it cost, and the calls tier 2 saved.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import attrs

from . import files
from .errors import AopkitError, DecodeError, StoreError
from .events import Corrected, CritiqueRound, Escalated
from .message import Msg, new_id
from .models import ModelError
from .printable import cell
from .structured import NotJSON, Target

if TYPE_CHECKING:
    from .kernel import Kernel
    from .models import ChatModel

T = TypeVar("T")


# -- the report -------------------------------------------------------------------------------
@attrs.define
class Fault:
    """One fault and how it ended. ``tier`` is the tier that resolved it (None: unresolved)."""

    kind: str  # accessibility | malformed | invalid | rejected
    model: str
    detail: str
    tier: int | None
    resolver: str | None
    calls: int = 0  # extra model calls the fault cost
    saved: int = 0  # model calls avoided because tier 2 fixed it


class FaultReport:
    """The faults of a run (of a kernel), in order."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def by_tier(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fault in self.faults:
            key = f"tier {fault.tier}" if fault.tier else "unresolved"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def render(self) -> str:
        """A plain-text table for the end of a run."""
        if not self.faults:
            return "Fault report: no faults."
        rows: list[tuple[str, ...]] = [
            ("#", "kind", "model", "resolved by", "extra calls", "calls saved", "detail")
        ]
        for i, f in enumerate(self.faults, 1):
            by = f"tier {f.tier}" if f.tier else "unresolved"
            by += f" ({f.resolver})" if f.resolver else ""
            cells = (f.kind, f.model, by, str(f.calls), str(f.saved), f.detail)
            rows.append((str(i), *map(cell, cells)))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        calls = sum(f.calls for f in self.faults)
        saved = sum(f.saved for f in self.faults)
        lines.append(
            f"{len(self.faults)} faults; {calls} extra model calls; {saved} calls saved by tier 2"
        )
        return "Fault report:\n" + "\n".join(lines)


# -- plugin interfaces ------------------------------------------------------------------------
class CannotCorrect(AopkitError):
    """A corrector could not fix the output; ``partial`` is text it improved on the way (fed to
    the next corrector), if any."""

    def __init__(self, reason: str, partial: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.partial = reason, partial


class CutOff(CannotCorrect):
    """The output was cut off (by the token limit, or it ends inside a value): what it would
    have said cannot be known, so no corrector may complete it; tier 3 can ask again."""


TOKEN_LIMIT = frozenset(
    {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded"}
)


def hit_token_limit(finish_reason: str | None) -> bool:
    """Whether a provider's finish reason says the answer stopped at the token limit (OpenAI,
    DashScope, Ollama and Gemini ``length``, Anthropic ``max_tokens``, the Responses API's
    ``max_output_tokens``...)."""
    return finish_reason is not None and finish_reason.lower() in TOKEN_LIMIT


class Corrector(Protocol):
    """Tier 2: turn malformed output text into a JSON value without calling a model; raise
    :class:`CannotCorrect` rather than guess, :class:`CutOff` for output that was cut off."""

    def correct(self, text: str, schema: dict[str, Any]) -> Any: ...


@attrs.define
class Critique:
    """What a critic works with; :meth:`ask` calls a model and counts the call."""

    model: ChatModel
    messages: list[Msg]
    output: str
    error: str  # what is wrong with the output, precisely
    kind: str  # malformed | invalid | rejected (a reviewing critic objected)
    target: Target[Any]
    round: int
    calls: int = 0
    finish_reason: str | None = None  # of the last answer :meth:`ask` got

    async def ask(
        self, messages: Sequence[Msg], model: ChatModel | None = None, structured: bool = True
    ) -> str:
        self.calls += 1
        response = await (model or self.model)(
            messages, structured=self.target.schema if structured else None
        )
        self.finish_reason = response.finish_reason  # type: ignore[union-attr]
        return response.text  # type: ignore[union-attr]


class Critic(Protocol):
    """Tier 3: ask a model again, with the precise problem, and return its new output text.

    A critic may also offer ``async review(critique) -> str | None`` to object to output that is
    valid but wrong (None means accepted)."""

    async def revise(self, critique: Critique) -> str: ...


# -- incidents (tier 4) -----------------------------------------------------------------------
@attrs.define
class Incident:
    """An unresolved fault, with what a person needs to act on it."""

    model: str
    target: str
    reason: str
    request: str  # the end of the conversation the model was answering
    outputs: list[str] = attrs.field(factory=list)
    tiers: list[dict[str, Any]] = attrs.field(factory=list)  # what each tier tried, and why not
    schema: dict[str, Any] | None = None
    id: str = attrs.field(factory=lambda: f"inc-{new_id()}")
    created: float = attrs.field(factory=time.time)
    resolution: str | None = None

    def describe(self) -> str:
        outcomes: dict[str, str] = {}  # each corrector or critic once, with its last outcome
        for step in self.tiers:
            outcomes[f"tier {step['tier']} {step['by']}"] = step["outcome"]
        tried = "; ".join(f"{who}: {outcome}" for who, outcome in outcomes.items())
        last = self.outputs[-1] if self.outputs else "(no output)"
        return (
            f"incident {self.id}: {self.model} could not produce a valid {self.target}: "
            f"{self.reason}\n  request: {self.request}\n  last output: {last[:300]}\n"
            f"  tried: {tried or 'nothing'}"
        )


@attrs.frozen
class Resolution:
    """A human's decision on an incident."""

    action: Literal["retry", "answer", "abort"]
    answer: Any = None  # a JSON value (or JSON text) for "answer"


class Unresolved(AopkitError):
    """No tier could resolve a fault and no human resolved it; ``incident`` says what happened."""

    def __init__(self, incident: Incident, why: str = "no one to escalate to") -> None:
        self.incident = incident
        super().__init__(f"{why}: {incident.describe()}")


@attrs.frozen
class SkippedLine:
    """A line of the incidents file that :meth:`IncidentStore.load` could not use."""

    number: int
    problem: str


class IncidentStore:
    """Incidents appended to a JSONL file (with their resolutions), so none is lost.

    Appends are serialised by an ``flock`` and each starts on a new line, so a record torn by
    a killed process damages only itself; :meth:`load` skips damaged lines, keeps every intact
    incident and lists what it skipped in :attr:`skipped` (and logs a warning).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.skipped: list[SkippedLine] = []  # by the last load()

    @classmethod
    def default(cls, environ: Any) -> IncidentStore:
        if environ.get("AOPKIT_INCIDENTS"):
            return cls(environ["AOPKIT_INCIDENTS"])
        base = environ.get("XDG_STATE_HOME") or os.path.join(
            os.path.expanduser("~"), ".local", "state"
        )
        return cls(Path(base) / "aopkit" / "incidents.jsonl")

    def append(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        line = text.encode("utf-8", "backslashreplace")  # a lone surrogate as its JSON escape
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:  # "+": start_on_a_new_line reads the last byte
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
            files.start_on_a_new_line(f.fileno())
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> list[dict[str, Any]]:
        """Every intact incident, with its latest resolution; damaged lines are skipped."""
        self.skipped = []
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read incidents file {self.path}: {exc.strerror}") from exc
        incidents: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(raw.split(b"\n"), 1):
            if line.strip():
                problem = _merge_incident(line, incidents)
                if problem is not None:
                    self.skipped.append(SkippedLine(number, problem))
        if self.skipped:
            from loguru import logger

            logger.warning(
                "incidents file {}: skipped {} damaged line(s): {}",
                self.path,
                len(self.skipped),
                "; ".join(f"line {s.number}: {s.problem}" for s in self.skipped[:5]),
            )
        return list(incidents.values())


def _merge_incident(line: bytes, incidents: dict[str, dict[str, Any]]) -> str | None:
    """Add one line's record to ``incidents``; what is wrong with the line if it cannot be."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"not a JSON record ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return "not an incident record (a JSON object with a string 'id')"
    if set(record) == {"id", "resolution"}:
        if record["id"] not in incidents:
            return f"a resolution of incident {record['id']!r}, which the file does not hold"
        incidents[record["id"]]["resolution"] = record["resolution"]
    else:
        incidents[record["id"]] = record
    return None


# -- the policy and the pipeline --------------------------------------------------------------
@attrs.frozen
class FaultPolicy:
    """Which correctors and critics run, in order, and how far to go. Names are looked up in
    the kernel's registries; instances are used as they are."""

    correctors: tuple[str | Corrector, ...] = ("fences", "json-repair", "coerce")
    critics: tuple[str | Critic, ...] = ("self",)
    rounds: int = 2
    review: bool = False  # let critics that can review object to valid output
    escalate: bool = True


DEFAULT_POLICY = FaultPolicy()


async def resolve(
    model: ChatModel,
    messages: Sequence[Msg],
    target: Target[T],
    *,
    policy: FaultPolicy | None = None,
) -> T:
    """Ask ``model`` for a value for ``target`` and see it through the tiers."""
    policy = policy or getattr(model, "fault_policy", None) or DEFAULT_POLICY

    async def ask() -> tuple[str, str | None]:
        response = await model(messages, structured=target.schema)
        return response.text, response.finish_reason  # type: ignore[union-attr]

    run = _Run(model.kernel, model.name, ask, list(messages), target, policy, model)
    value: T = await run.run()
    return value


async def resolve_output(
    kernel: Kernel,
    source: str,
    output: str,
    target: Target[T],
    *,
    policy: FaultPolicy | None = None,
) -> T:
    """See output that no model can be asked again for (an agent's reply) through tiers 2 and 4.
    ``source`` names where it came from in the report and the incident."""
    policy = attrs.evolve(policy or DEFAULT_POLICY, critics=(), rounds=0)

    async def ask() -> tuple[str, str | None]:
        return output, None

    value: T = await _Run(kernel, source, ask, [], target, policy).run()
    return value


def correct(
    kernel: Kernel,
    source: str,
    output: str,
    target: Target[T],
    correctors: Sequence[str | Corrector],
    *,
    kind: str,
    error: str,
    tiers: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
) -> T | None:
    """Tier 2 on its own: the checked value the correctors make of ``output``, or None. A fix is
    recorded in the report (one model call saved); each attempt is an event (and a line in
    ``tiers``, for an incident). Raises :class:`CutOff`, trying no further corrector, when the
    output was cut off: ``finish_reason`` says the answer hit the token limit, or a corrector
    found it ends inside a value."""
    if hit_token_limit(finish_reason):
        reason = f"the output was cut off by the token limit (finish reason {finish_reason!r})"
        _corrected(kernel, tiers, "(none)", False, reason)
        raise CutOff(reason)
    text = output
    for entry in correctors:
        name = _name(entry)
        corrector = kernel.correctors[entry] if isinstance(entry, str) else entry
        try:
            candidate = corrector.correct(text, target.schema)
        except CutOff as exc:
            _corrected(kernel, tiers, name, False, exc.reason)
            raise
        except CannotCorrect as exc:
            _corrected(kernel, tiers, name, False, exc.reason)
            text = exc.partial or text
            continue
        try:
            value = target.check(candidate)
        except DecodeError as exc:
            _corrected(kernel, tiers, name, False, f"repaired but still invalid: {exc}")
            text = json.dumps(candidate, ensure_ascii=False)
            continue
        _corrected(kernel, tiers, name, True, "")
        kernel.faults.add(Fault(kind, source, error, 2, name, 0, 1))
        return value
    return None


def _name(entry: object) -> str:
    """A corrector's or critic's name: as registered, else its ``name``, else its class."""
    if isinstance(entry, str):
        return entry
    return str(getattr(entry, "name", type(entry).__name__))


def _corrected(
    kernel: Kernel, tiers: list[dict[str, Any]] | None, name: str, ok: bool, detail: str
) -> None:
    if tiers is not None:
        tiers.append({"tier": 2, "by": name, "outcome": "fixed" if ok else detail})
    if kernel.observed:
        kernel.emit(Corrected(corrector=name, ok=ok, detail=kernel.secrets.redact(detail)[:200]))


class _Run:
    """One resolution: the state the tiers share and hand to the report and the incident."""

    def __init__(
        self,
        kernel: Kernel,
        source: str,
        ask: Callable[[], Awaitable[tuple[str, str | None]]],
        messages: list[Msg],
        target: Target[Any],
        policy: FaultPolicy,
        model: ChatModel | None = None,
    ) -> None:
        self.kernel, self.source, self.ask = kernel, source, ask  # ask: (text, finish reason)
        self.messages, self.target, self.policy, self.model = messages, target, policy, model
        self.outputs: list[str] = []
        self.tiers: list[dict[str, Any]] = []

    async def run(self) -> Any:
        while True:
            try:
                return await self._attempt()
            except _Escalate as exc:
                incident = new_incident(
                    self.kernel,
                    self.source,
                    self.target,
                    exc.reason,
                    self.messages,
                    self.outputs,
                    self.tiers,
                )
                fault = exc.fault or Fault(
                    exc.kind, self.source, incident.reason, None, None, exc.calls
                )
                resolution = await escalate(self.kernel, incident, fault, self.policy)
                if resolution is None:
                    raise Unresolved(incident) from None
                if resolution.action == "answer":
                    return answer(self.target, incident, resolution)
                self.outputs, self.tiers = [], []  # retry: start over

    async def _attempt(self) -> Any:
        calls = 0
        first_kind, first_error = "", ""
        try:
            output, finish = await self.ask()
        except ModelError as exc:
            raise _Escalate("accessibility", str(exc), 0, exc.fault) from None
        for round_ in range(self.policy.rounds + 1):
            self.outputs.append(output)
            try:
                value = self.target.parse(output)
                kind, error = None, ""
                if hit_token_limit(finish) and output.rstrip()[-1:].isdigit():
                    value, kind, error = None, "malformed", "it ends in a number, maybe cut short"
            except NotJSON as exc:
                value, kind, error = None, "malformed", str(exc)
            except DecodeError as exc:
                value, kind, error = None, "invalid", str(exc)
            if kind is not None:
                try:
                    value = self._correct(output, kind, error, finish)
                except CutOff as exc:
                    error = f"{exc.reason}; {error}"
            if value is not None:
                objection, spent = await self._review(output, round_)
                calls += spent
                if objection is None:
                    if round_:
                        critic = self._critic_name(round_ - 1)
                        self._record(first_kind, first_error, 3, critic, calls)
                    return value
                kind, error = "rejected", objection
            if not first_kind:
                first_kind, first_error = kind or "invalid", error
            if round_ == self.policy.rounds or not self.policy.critics or self.model is None:
                raise _Escalate(kind or "invalid", error, calls)
            critic = self._critic(round_)
            critique = Critique(
                self.model, self.messages, output, error, kind or "invalid", self.target, round_ + 1
            )
            try:
                output = await critic.revise(critique)
            except ModelError as exc:
                raise _Escalate(
                    "accessibility", str(exc), calls + critique.calls, exc.fault
                ) from None
            calls += critique.calls
            finish = critique.finish_reason
            accepted = self._parses(output)
            self.tiers.append(
                {
                    "tier": 3,
                    "by": self._critic_name(round_),
                    "outcome": "accepted" if accepted else "still invalid",
                }
            )
            if self.kernel.observed:
                self.kernel.emit(
                    CritiqueRound(
                        critic=self._critic_name(round_),
                        round=round_ + 1,
                        accepted=accepted,
                        detail=self.kernel.secrets.redact(error)[:200],
                    )
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _parses(self, output: str) -> bool:
        try:
            self.target.parse(output)
        except (NotJSON, DecodeError):
            return False
        return True

    # -- tier 2 -----------------------------------------------------------------------------
    def _correct(self, output: str, kind: str, error: str, finish: str | None) -> Any:
        return correct(
            self.kernel,
            self.source,
            output,
            self.target,
            self.policy.correctors,
            kind=kind,
            error=error,
            tiers=self.tiers,
            finish_reason=finish,
        )

    # -- tier 3 -----------------------------------------------------------------------------
    def _critic(self, round_: int) -> Any:
        entry = self.policy.critics[round_ % len(self.policy.critics)]
        return self.kernel.critics[entry] if isinstance(entry, str) else entry

    def _critic_name(self, round_: int) -> str:
        return _name(self.policy.critics[round_ % len(self.policy.critics)])

    async def _review(self, output: str, round_: int) -> tuple[str | None, int]:
        """A reviewing critic's objection to valid output (None: accepted), and its calls."""
        if not self.policy.review or not self.policy.critics or self.model is None:
            return None, 0
        critic = self._critic(round_)
        review = getattr(critic, "review", None)
        if review is None:
            return None, 0
        critique = Critique(self.model, self.messages, output, "", "", self.target, round_ + 1)
        objection: str | None = await review(critique)
        return objection, critique.calls

    def _record(
        self, kind: str, detail: str, tier: int, resolver: str, calls: int, saved: int = 0
    ) -> None:
        detail = self.kernel.secrets.redact(detail)
        self.kernel.faults.add(Fault(kind, self.source, detail, tier, resolver, calls, saved))


def new_incident(
    kernel: Kernel,
    source: str,
    target: Target[Any],
    reason: str,
    messages: Sequence[Msg],
    outputs: Sequence[str],
    tiers: list[dict[str, Any]],
) -> Incident:
    """The incident for a fault no tier resolved, the kernel's secrets scrubbed from every text
    before any is cut short."""
    redact = kernel.secrets.redact
    return Incident(
        model=source,
        target=target.name,
        reason=redact(reason),
        request=redact(_request_summary(messages, redact)),
        outputs=[redact(output) for output in outputs],
        tiers=tiers,
        schema=target.schema,
    )


async def escalate(
    kernel: Kernel, incident: Incident, fault: Fault, policy: FaultPolicy
) -> Resolution | None:
    """Tier 4 on its own: persist and log the incident, then ask for a resolution (None when
    no one gave one); an abort raises :class:`Unresolved`. ``fault`` is recorded and updated."""
    reason = incident.reason
    if not any(f is fault for f in kernel.faults.faults):
        kernel.faults.add(fault)
    _chat_log(kernel.secrets.redact(incident.describe()))
    kernel.incidents.append(attrs.asdict(incident))
    if kernel.observed:
        kernel.emit(Escalated(incident=incident.id, reason=reason[:200]))
    resolution = None
    if policy.escalate:
        resolution = await kernel.escalate(incident)
        if resolution is None and _terminal_attached():
            resolution = await ask_on_terminal(incident)
    if resolution is None:
        return None
    if not isinstance(resolution, Resolution):
        raise AopkitError(f"an escalate hook returned {resolution!r}, not a Resolution")
    kernel.incidents.append({"id": incident.id, "resolution": resolution.action})
    if kernel.observed:
        kernel.emit(
            Escalated(incident=incident.id, reason=reason[:200], resolution=resolution.action)
        )
    if resolution.action == "abort":
        raise Unresolved(incident, "aborted by a human")
    fault.tier, fault.resolver = 4, f"human ({resolution.action})"
    return resolution


def answer(target: Target[T], incident: Incident, resolution: Resolution) -> T:
    """The value of a human's ``answer`` (a JSON value or JSON text), strictly checked."""
    given = resolution.answer
    try:
        return target.parse(given) if isinstance(given, str) else target.check(given)
    except (NotJSON, DecodeError) as exc:
        raise Unresolved(
            incident, f"the human's answer is not a valid {target.name} ({exc})"
        ) from None


def _terminal_attached() -> bool:
    import sys

    return sys.stdin is not None and sys.stdin.isatty()


async def ask_on_terminal(incident: Incident) -> Resolution:
    """The default resolver when a terminal is attached: show the incident and ask."""
    from .terminal import ask

    print(incident.describe(), flush=True)
    while True:
        choice = (await ask("[r]etry, [a]nswer, or a[b]ort? ")).strip()
        if choice[:1].lower() == "r":
            return Resolution("retry")
        if choice[:1].lower() == "b":
            return Resolution("abort")
        if choice[:1].lower() == "a":
            answer = await ask("answer (JSON): ")
            try:
                return Resolution("answer", json.loads(answer))
            except ValueError as exc:
                print(f"not JSON ({exc}); try again", flush=True)


class _Escalate(Exception):
    def __init__(self, kind: str, reason: str, calls: int, fault: Fault | None = None) -> None:
        self.kind, self.reason, self.calls, self.fault = kind, reason, calls, fault


def _request_summary(messages: Sequence[Msg], redact: Callable[[str], str]) -> str:
    from .sinks import describe  # tool calls and results too, not only text

    tail = [f"{m.name}: {redact(describe(m))}" for m in messages[-2:]]
    return " | ".join(tail)[-500:]


def _chat_log(text: str) -> None:
    from loguru import logger

    from .sinks import chat_level

    logger.log(chat_level(), text)
