"""Typed, serialisable events: everything that happens in a kernel, in order.

Emitters check ``kernel.observed`` before building an event, so with no listener an event costs
one attribute read. Each event's ``type`` tag names it in JSON (traces, the web UI).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import attrs

from .message import Msg


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event; ``time`` is when it happened (seconds since the epoch)."""

    type: ClassVar[str] = ""
    time: float = attrs.field(factory=time.time)


@attrs.frozen(kw_only=True)
class MessageSent(Event):
    """An agent replied, or a hub broadcast a message; ``hubs`` are the hubs it went to."""

    type: ClassVar[str] = "message_sent"
    msg: Msg
    hubs: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class HubJoined(Event):
    """``agent`` joined ``hub`` (on entering the hub, or by ``hub.add``)."""

    type: ClassVar[str] = "hub_joined"
    hub: str
    agent: str


@attrs.frozen(kw_only=True)
class HubLeft(Event):
    """``agent`` left ``hub`` (on leaving the hub, or by ``hub.remove``)."""

    type: ClassVar[str] = "hub_left"
    hub: str
    agent: str


@attrs.frozen(kw_only=True)
class ReplyStarted(Event):
    """``agent`` began a reply; ``inputs`` are the ids of the messages it replies to;
    ``conversation`` is the hub it speaks in (the innermost one) or else its session id, ``None``
    when it has neither."""

    type: ClassVar[str] = "reply_started"
    agent: str
    inputs: tuple[str, ...] = ()  # ids of the messages it replies to
    conversation: str | None = None


@attrs.frozen(kw_only=True)
class ReplyFinished(Event):
    """``agent`` replied with message ``msg_id`` after ``seconds``;
    ``interrupted`` if :meth:`Agent.interrupt` cut it short."""

    type: ClassVar[str] = "reply_finished"
    agent: str
    msg_id: str
    seconds: float
    interrupted: bool = False


@attrs.frozen(kw_only=True)
class ReplyFailed(Event):
    """``agent``'s reply raised ``error`` (secrets scrubbed) after ``seconds``."""

    type: ClassVar[str] = "reply_failed"
    agent: str
    error: str
    seconds: float


@attrs.frozen(kw_only=True)
class Observed(Event):
    """``agent`` took in message ``msg_id`` without replying (a hub delivery)."""

    type: ClassVar[str] = "observed"
    agent: str
    msg_id: str


@attrs.frozen(kw_only=True)
class ModelCallStarted(Event):
    """A call to ``model`` (``provider:name``) began, for ``agent`` (None: outside any agent's
    reply) in ``hubs``; ``call_id`` pairs it with its end; ``server_address``/``server_port`` are
    where it goes (``None`` for an in-process model)."""

    type: ClassVar[str] = "model_call_started"
    model: str
    call_id: str
    agent: str | None = None
    hubs: tuple[str, ...] = ()
    stream: bool = False
    structured: bool = False  # a JSON answer was asked for
    server_address: str | None = None
    server_port: int | None = None


@attrs.frozen(kw_only=True)
class ModelCallFinished(Event):
    """The call ``call_id`` ended after ``seconds``, retries included; ``usage`` is what it used
    (tokens, retries, cost: see :class:`~aopkit.models.Usage`), ``error`` why it failed; the
    response fields are what the server reported (``None`` if it did not say, or the call
    failed)."""

    type: ClassVar[str] = "model_call_finished"
    model: str
    call_id: str
    seconds: float
    usage: dict[str, Any] = attrs.field(factory=dict)
    error: str | None = None
    agent: str | None = None
    hubs: tuple[str, ...] = ()
    response_id: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None


@attrs.frozen(kw_only=True)
class BudgetReached(Event):
    """A model call was refused before it was made: it would exceed the ``limit`` (calls,
    tokens or cost) of ``account``'s budget, which allows ``allowed`` and has used ``used``."""

    type: ClassVar[str] = "budget_reached"
    account: str
    limit: str
    allowed: float
    used: float
    model: str
    agent: str | None = None
    hubs: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Retried(Event):
    """A model call failed with a retryable error and will be tried again after ``wait`` s."""

    type: ClassVar[str] = "retried"
    model: str
    call_id: str
    attempt: int
    error: str
    wait: float


@attrs.frozen(kw_only=True)
class Corrected(Event):
    """A corrector (fault tier 2) tried to repair an output without a model call."""

    type: ClassVar[str] = "corrected"
    corrector: str
    ok: bool
    detail: str = ""


@attrs.frozen(kw_only=True)
class CritiqueRound(Event):
    """One round of a critique strategy (fault tier 3)."""

    type: ClassVar[str] = "critique_round"
    critic: str
    round: int
    accepted: bool
    detail: str = ""


@attrs.frozen(kw_only=True)
class Escalated(Event):
    """A fault no tier could resolve was handed to a human (fault tier 4)."""

    type: ClassVar[str] = "escalated"
    incident: str
    reason: str
    resolution: str | None = None


@attrs.frozen(kw_only=True)
class ToolStarted(Event):
    """A tool call began; ``call_id`` is the model's id for it."""

    type: ClassVar[str] = "tool_started"
    tool: str
    call_id: str


@attrs.frozen(kw_only=True)
class ToolFinished(Event):
    """A tool call ended after ``seconds``; ``error`` says why it failed, if it did."""

    type: ClassVar[str] = "tool_finished"
    tool: str
    call_id: str
    seconds: float
    error: str | None = None


@attrs.frozen(kw_only=True)
class ReplyChunk(Event):
    """Part of a reply being streamed: ``text`` is everything the agent has said so far."""

    type: ClassVar[str] = "reply_chunk"
    agent: str
    text: str


@attrs.frozen(kw_only=True)
class StateSaved(Event):
    """The state of ``agents`` was saved as session ``session``."""

    type: ClassVar[str] = "state_saved"
    session: str
    agents: tuple[str, ...]


@attrs.frozen(kw_only=True)
class StateLoaded(Event):
    """The state of ``agents`` was loaded from session ``session``."""

    type: ClassVar[str] = "state_loaded"
    session: str
    agents: tuple[str, ...]


@attrs.frozen(kw_only=True)
class RoundFinished(Event):
    """A round of a many-agent run ended: ``replied`` of ``agents`` answered (``failed`` raised)
    in ``seconds``; ``aggregates`` are the numbers the program reported for the round."""

    type: ClassVar[str] = "round_finished"
    run: str
    round: int
    agents: int
    replied: int
    failed: int = 0
    seconds: float = 0.0
    aggregates: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Compacted(Event):
    """``agent``'s history neared its token budget and ``strategies`` shrank it from
    ``tokens_before`` to ``tokens_after`` (estimates): the messages of ids ``removed`` went,
    ``added`` came in their place (summaries, tool results reduced to a note)."""

    type: ClassVar[str] = "compacted"
    agent: str
    strategies: tuple[str, ...]
    tokens_before: int
    tokens_after: int
    removed: tuple[str, ...] = ()
    added: tuple[Msg, ...] = ()


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        MessageSent,
        HubJoined,
        HubLeft,
        ReplyStarted,
        ReplyFinished,
        ReplyFailed,
        Observed,
        ModelCallStarted,
        ModelCallFinished,
        BudgetReached,
        Retried,
        Corrected,
        CritiqueRound,
        Escalated,
        ToolStarted,
        ToolFinished,
        ReplyChunk,
        StateSaved,
        StateLoaded,
        RoundFinished,
        Compacted,
    )
}
