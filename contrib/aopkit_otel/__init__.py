"""OpenTelemetry for aopkit: the event stream as spans and metrics that follow the GenAI
semantic conventions. ``aopkit_otel.instrument(kernel)``, or ``aopkit_otel.setup(endpoint)`` to
export to an OTLP collector in one call.

Each agent reply is an ``invoke_agent`` span; model calls (``chat``, with token usage) and tool
calls (``execute_tool``) inside it are its children; retries, corrections, critique rounds and
escalations are span events. Spans go to the tracer provider you pass, else the global one:
nothing leaves the machine unless you configure an exporter. Message contents are recorded only
when asked (``capture_content=True``), scrubbed of the kernel's secrets.
"""

from __future__ import annotations

import json
from contextlib import suppress
from contextvars import ContextVar, Token
from typing import Any, ClassVar

import attrs
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

import aopkit
from aopkit import events as ev

from .export import Telemetry, setup
from .model_metrics import ModelCallMetrics, provider_name

__all__ = ["OtelSink", "Telemetry", "instrument", "setup"]


@attrs.define
class _Reply:
    """A reply span and what its agent's model calls told about it."""

    span: Span
    provider: str | None = None
    finish_reason: str | None = None


@attrs.frozen
class _Scope:
    """The span that calls made now nest in, the conversation it belongs to and the reply (of
    the agent whose model and tools these are)."""

    span: Span
    conversation: str | None
    reply: _Reply


# The scope of the running reply or tool call. Set where it starts, so the reply's own task
# (created right after) inherits it; reset where it ends, in the same context.
_current: ContextVar[_Scope | None] = ContextVar("aopkit_otel_scope", default=None)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtelSink:
    """The ``event`` hook that turns events into spans, span events and metrics."""

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        *,
        kernel: aopkit.Kernel | None = None,
        capture_content: bool = False,
    ) -> None:
        if capture_content and kernel is None:
            raise aopkit.AopkitError(
                "capture_content=True needs the kernel, whose secrets scrub the contents"
            )
        self.kernel = kernel
        self.capture_content = capture_content
        self.tracer = trace.get_tracer("aopkit", aopkit.__version__, tracer_provider)
        self.metrics = ModelCallMetrics(
            metrics.get_meter("aopkit", aopkit.__version__, meter_provider)
        )
        self._replies: dict[str, list[tuple[Span, Token[_Scope | None]]]] = {}
        self._calls: dict[str, Span] = {}
        self._tools: dict[str, tuple[Span, Token[_Scope | None]]] = {}

    @aopkit.hookimpl
    def event(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(self, event)

    def _start(
        self,
        name: str,
        event: ev.Event,
        kind: SpanKind,
        attributes: dict[str, Any],
        conversation: str | None = None,
    ) -> tuple[Span, str | None]:
        """A span nested in the current scope, and its conversation: the one given, else the
        scope's."""
        scope = _current.get()
        conversation = conversation or (scope.conversation if scope else None)
        if conversation is not None:
            attributes["gen_ai.conversation.id"] = conversation
        context = trace.set_span_in_context(scope.span) if scope is not None else None
        span = self.tracer.start_span(
            name, context, kind, attributes=attributes, start_time=_ns(event.time)
        )
        return span, conversation

    # -- agent replies ----------------------------------------------------------------------
    def _reply_started(self, event: ev.ReplyStarted) -> None:
        span, conversation = self._start(
            f"invoke_agent {event.agent}",
            event,
            SpanKind.INTERNAL,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": event.agent},
            event.conversation,
        )
        scope = _Scope(span, conversation, _Reply(span))
        self._replies.setdefault(event.agent, []).append((span, _current.set(scope)))

    def _message_sent(self, event: ev.MessageSent) -> None:
        """With content capture, an agent's reply is its span's output message."""
        stack = self._replies.get(event.msg.name)
        scope = _current.get()
        if not (self.capture_content and stack and scope and scope.span is stack[-1][0]):
            return
        assert self.kernel is not None  # checked at construction
        output: dict[str, Any] = {"role": event.msg.role, "parts": _parts(event.msg)}
        if scope.reply.finish_reason is not None:
            output["finish_reason"] = scope.reply.finish_reason
        text = json.dumps([output], ensure_ascii=False, default=str)
        scope.span.set_attribute("gen_ai.output.messages", self.kernel.secrets.redact(text))

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
        provider, model = provider_name(event.model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.stream": event.stream,
        }
        if event.structured:
            attributes["gen_ai.output.type"] = "json"
        if event.server_address is not None and event.server_port is not None:
            attributes["server.address"] = event.server_address
            attributes["server.port"] = event.server_port
        scope = _current.get()
        if scope is not None and scope.reply.provider is None:
            # the reply's provider and model: those of its agent's first model call
            scope.reply.provider = provider
            scope.reply.span.set_attribute("gen_ai.provider.name", provider)
            scope.reply.span.set_attribute("gen_ai.request.model", model)
        span, _ = self._start(f"chat {model}", event, SpanKind.CLIENT, attributes)
        self._calls[event.call_id] = span

    def _model_finished(self, event: ev.ModelCallFinished) -> None:
        self.metrics.record(event)
        span = self._calls.pop(event.call_id, None)
        if span is None:
            return
        if event.response_id is not None:
            span.set_attribute("gen_ai.response.id", event.response_id)
        if event.response_model is not None:
            span.set_attribute("gen_ai.response.model", event.response_model)
        if event.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [event.finish_reason])
            if (scope := _current.get()) is not None:
                scope.reply.finish_reason = event.finish_reason
        for kind in ("input", "output"):
            count = event.usage.get(f"{kind}_tokens")
            if isinstance(count, int):
                span.set_attribute(f"gen_ai.usage.{kind}_tokens", count)
        if event.error is not None:
            span.set_status(Status(StatusCode.ERROR, event.error))
            span.set_attribute("error.type", event.error.partition(":")[0])
        span.end(end_time=_ns(event.time))

    def _tool_started(self, event: ev.ToolStarted) -> None:
        span, conversation = self._start(
            f"execute_tool {event.tool}",
            event,
            SpanKind.INTERNAL,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool,
                "gen_ai.tool.call.id": event.call_id,
                "gen_ai.tool.type": "function",
            },
        )
        scope = _current.get()
        inner = _Scope(span, conversation, scope.reply if scope else _Reply(span))
        self._tools[event.call_id] = (span, _current.set(inner))  # agents it calls nest in it

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
        scope = _current.get()
        span = span or (scope.span if scope else None) or trace.get_current_span()
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
        ev.MessageSent: _message_sent,
        ev.ModelCallStarted: _model_started,
        ev.ModelCallFinished: _model_finished,
        ev.ToolStarted: _tool_started,
        ev.ToolFinished: _tool_finished,
        ev.Retried: _retried,
        ev.Corrected: _corrected,
        ev.CritiqueRound: _critique,
        ev.Escalated: _escalated,
    }


def _parts(msg: aopkit.Msg) -> list[dict[str, Any]]:
    """A message's content as the conventions' message parts (text and tool calls; other
    blocks by their type only: media bytes never go into a span)."""
    if isinstance(msg.content, str):
        return [{"type": "text", "content": msg.content}]
    parts: list[dict[str, Any]] = []
    for block in msg.content:
        if isinstance(block, aopkit.TextBlock):
            parts.append({"type": "text", "content": block.text})
        elif isinstance(block, aopkit.ToolUseBlock):
            parts.append(
                {"type": "tool_call", "id": block.id, "name": block.name, "arguments": block.input}
            )
        else:
            parts.append({"type": block.type})
    return parts


def _restore(span: Span, token: Token[_Scope | None]) -> Span:
    with suppress(ValueError):  # ended in another context than it started: nothing to restore
        _current.reset(token)
    return span


def instrument(
    kernel: aopkit.Kernel,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    capture_content: bool = False,
) -> OtelSink:
    """Send ``kernel``'s events to OpenTelemetry; returns the registered sink (plugin name
    ``otel``). ``capture_content=True`` records replies' contents on their spans."""
    sink = OtelSink(tracer_provider, meter_provider, kernel=kernel, capture_content=capture_content)
    kernel.register(sink, "otel")
    return sink
