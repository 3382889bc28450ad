"""OpenTelemetry for aopkit: the event stream as spans and metrics that follow the GenAI
semantic conventions. ``aopkit_otel.instrument(kernel)``.

Each agent reply is an ``invoke_agent`` span; model calls (``chat``, with token usage) and tool
calls (``execute_tool``) inside it are its children; retries, corrections, critique rounds and
escalations are span events. Spans go to the tracer provider you pass, else the global one:
nothing leaves the machine unless you configure an exporter.
"""

from __future__ import annotations

from contextlib import suppress
from contextvars import ContextVar, Token
from typing import Any, ClassVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

import aopkit
from aopkit import events as ev

from .model_metrics import ModelCallMetrics

__all__ = ["OtelSink", "instrument"]

# The reply span of the running agent. Set where the reply starts, so the reply's own task
# (created right after) inherits it; reset where the reply ends, in the same context.
_current: ContextVar[Span | None] = ContextVar("aopkit_otel_reply", default=None)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtelSink:
    """The ``event`` hook that turns events into spans, span events and metrics."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("aopkit", aopkit.__version__, tracer_provider)
        self.metrics = ModelCallMetrics(
            metrics.get_meter("aopkit", aopkit.__version__, meter_provider)
        )
        self._replies: dict[str, list[tuple[Span, Token[Span | None]]]] = {}
        self._calls: dict[str, Span] = {}
        self._tools: dict[str, tuple[Span, Token[Span | None]]] = {}

    @aopkit.hookimpl
    def event(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(self, event)

    def _start(self, name: str, event: ev.Event, kind: SpanKind, **attributes: Any) -> Span:
        parent = _current.get()
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name, context, kind, attributes=attributes, start_time=_ns(event.time)
        )

    # -- agent replies ----------------------------------------------------------------------
    def _reply_started(self, event: ev.ReplyStarted) -> None:
        span = self._start(
            f"invoke_agent {event.agent}",
            event,
            SpanKind.INTERNAL,
            **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": event.agent},
        )
        self._replies.setdefault(event.agent, []).append((span, _current.set(span)))

    def _reply_ended(self, event: ev.ReplyFinished | ev.ReplyFailed) -> None:
        stack = self._replies.get(event.agent)
        if not stack:
            return
        span = _restore(*stack.pop())
        if isinstance(event, ev.ReplyFailed):
            span.set_status(Status(StatusCode.ERROR, event.error))
            span.set_attribute("error.type", event.error.partition(":")[0])
        elif event.interrupted:
            span.set_attribute("aopkit.interrupted", True)
        span.end(end_time=_ns(event.time))

    # -- model and tool calls ---------------------------------------------------------------
    def _model_started(self, event: ev.ModelCallStarted) -> None:
        provider, _, model = event.model.partition(":")
        self._calls[event.call_id] = self._start(
            f"chat {model}",
            event,
            SpanKind.CLIENT,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
            },
        )

    def _model_finished(self, event: ev.ModelCallFinished) -> None:
        self.metrics.record(event)
        span = self._calls.pop(event.call_id, None)
        if span is None:
            return
        for kind in ("input", "output"):
            count = event.usage.get(f"{kind}_tokens")
            if isinstance(count, int):
                span.set_attribute(f"gen_ai.usage.{kind}_tokens", count)
        if event.error is not None:
            span.set_status(Status(StatusCode.ERROR, event.error))
            span.set_attribute("error.type", event.error.partition(":")[0])
        span.end(end_time=_ns(event.time))

    def _tool_started(self, event: ev.ToolStarted) -> None:
        span = self._start(
            f"execute_tool {event.tool}",
            event,
            SpanKind.INTERNAL,
            **{
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool,
                "gen_ai.tool.call.id": event.call_id,
            },
        )
        self._tools[event.call_id] = (span, _current.set(span))  # agents it calls nest in it

    def _tool_finished(self, event: ev.ToolFinished) -> None:
        started = self._tools.pop(event.call_id, None)
        if started is None:
            return
        span = _restore(*started)
        if event.error is not None:
            span.set_status(Status(StatusCode.ERROR, event.error))
            span.set_attribute("error.type", event.error.partition(":")[0])
        span.end(end_time=_ns(event.time))

    # -- faults: span events ----------------------------------------------------------------
    def _mark(self, span: Span | None, name: str, event: ev.Event, **attributes: Any) -> None:
        span = span or _current.get() or trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes, timestamp=_ns(event.time))
        else:  # outside any reply: a span of its own so the fault is not lost
            with self.tracer.start_as_current_span(name, start_time=_ns(event.time)) as alone:
                alone.set_attributes(attributes)

    def _retried(self, event: ev.Retried) -> None:
        self._mark(
            self._calls.get(event.call_id),
            "aopkit.retry",
            event,
            attempt=event.attempt,
            error=event.error,
            wait=event.wait,
        )

    def _corrected(self, event: ev.Corrected) -> None:
        self._mark(None, "aopkit.correction", event, corrector=event.corrector, ok=event.ok)

    def _critique(self, event: ev.CritiqueRound) -> None:
        self._mark(
            None,
            "aopkit.critique",
            event,
            critic=event.critic,
            round=event.round,
            accepted=event.accepted,
        )

    def _escalated(self, event: ev.Escalated) -> None:
        attributes = {"incident": event.incident, "reason": event.reason}
        if event.resolution is not None:
            attributes["resolution"] = event.resolution
        self._mark(None, "aopkit.escalation", event, **attributes)

    _handlers: ClassVar[dict[type, Any]] = {
        ev.ReplyStarted: _reply_started,
        ev.ReplyFinished: _reply_ended,
        ev.ReplyFailed: _reply_ended,
        ev.ModelCallStarted: _model_started,
        ev.ModelCallFinished: _model_finished,
        ev.ToolStarted: _tool_started,
        ev.ToolFinished: _tool_finished,
        ev.Retried: _retried,
        ev.Corrected: _corrected,
        ev.CritiqueRound: _critique,
        ev.Escalated: _escalated,
    }


def _restore(span: Span, token: Token[Span | None]) -> Span:
    with suppress(ValueError):  # ended in another context than it started: nothing to restore
        _current.reset(token)
    return span


def instrument(
    kernel: aopkit.Kernel, *, tracer_provider: Any = None, meter_provider: Any = None
) -> OtelSink:
    """Send ``kernel``'s events to OpenTelemetry; returns the registered sink."""
    sink = OtelSink(tracer_provider, meter_provider)
    kernel.register(sink, "otel")
    return sink
