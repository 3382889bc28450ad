"""Events become OpenTelemetry spans and metrics, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import attrs
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aopkit import Msg, ReActAgent, Toolkit, ToolUseBlock, hookimpl
from aopkit.faults import FaultPolicy, Resolution
from aopkit.model_agent import ModelAgent
from aopkit.models import ModelUnavailable
from aopkit_otel import instrument


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@attrs.define
class Verdict:
    winner: str


@pytest.fixture
def otel(kernel):
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    instrument(kernel, tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield exporter, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


async def test_a_react_run_with_one_tool_call_is_a_span_tree(kernel, otel):
    exporter, reader = otel
    model = kernel.model(
        "scripted:brain", responses=[[ToolUseBlock("c1", "multiply", {"a": 6, "b": 7})], "42."]
    )
    helper = ReActAgent("helper", model, toolkit=Toolkit([multiply], kernel=kernel), kernel=kernel)
    await helper(Msg("user", "6 times 7?", "user"))

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "chat brain",
        "chat brain",
        "execute_tool multiply",
        "invoke_agent helper",
    ]
    agent = spans["invoke_agent helper"]
    assert agent.parent is None
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "helper"
    for span in exporter.get_finished_spans():
        if span is not agent:
            assert span.parent.span_id == agent.context.span_id
            assert span.context.trace_id == agent.context.trace_id
            assert agent.start_time <= span.start_time <= span.end_time <= agent.end_time
    chat = spans["chat brain"]
    assert chat.kind == SpanKind.CLIENT
    assert chat.attributes["gen_ai.provider.name"] == "scripted"
    assert chat.attributes["gen_ai.request.model"] == "brain"
    assert chat.attributes["gen_ai.usage.output_tokens"] >= 1
    assert chat.attributes["gen_ai.usage.input_tokens"] >= 1  # the scripted model's estimate
    tool = spans["execute_tool multiply"]
    assert tool.attributes["gen_ai.tool.name"] == "multiply"
    assert tool.attributes["gen_ai.tool.call.id"] == "c1"

    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    usage = metrics["gen_ai.client.token.usage"].data.data_points
    assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"].data.data_points) == 2


async def test_nested_replies_nest_and_failures_are_errors(kernel, otel):
    exporter, _ = otel
    inner = ReActAgent("inner", kernel.model("scripted:i", responses=[]), kernel=kernel)

    async def delegate() -> str:
        """Ask the inner agent (it fails)."""
        try:
            await inner(Msg("outer", "help", "user"))
        except Exception as exc:
            return f"inner failed: {type(exc).__name__}"
        return "ok"

    outer = ReActAgent(
        "outer",
        kernel.model("scripted:o", responses=[[ToolUseBlock("d", "delegate", {})], "done"]),
        toolkit=Toolkit([delegate], kernel=kernel),
        kernel=kernel,
    )
    await outer(Msg("user", "go", "user"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    failed = spans["invoke_agent inner"]
    assert failed.parent.span_id == spans["execute_tool delegate"].context.span_id
    assert failed.status.status_code == StatusCode.ERROR
    assert spans["chat i"].status.status_code == StatusCode.ERROR


async def test_retries_corrections_and_escalations_are_span_events(kernel, otel):
    exporter, _ = otel

    class Human:
        @hookimpl
        def escalate(self, incident):
            return Resolution("answer", '{"winner": "Bob"}')

    kernel.register(Human(), "human")
    busy = ModelUnavailable("scripted:judge", "overloaded", status=503, retry_after=0.01)
    judge = ModelAgent(
        "judge",
        kernel.model(
            "scripted:judge", responses=[busy, "no JSON at all", '```json\n{"winner": "A"}```']
        ),
        faults=FaultPolicy(critics=(), rounds=0),
        kernel=kernel,
    )
    assert await judge(Msg("user", "who?", "user"), structured=Verdict) == Verdict("Bob")
    assert await judge(Msg("user", "and now?", "user"), structured=Verdict) == Verdict("A")
    chats = [s for s in exporter.get_finished_spans() if s.name == "chat judge"]
    assert [e.name for e in chats[0].events] == ["aopkit.retry"]
    assert chats[0].events[0].attributes["attempt"] == 1
    first, second = (s for s in exporter.get_finished_spans() if s.name == "invoke_agent judge")
    names = [e.name for e in first.events]
    assert names[-2:] == ["aopkit.escalation", "aopkit.escalation"]
    assert first.events[-1].attributes["resolution"] == "answer"
    assert [e.name for e in second.events] == ["aopkit.correction"]
    assert second.events[0].attributes["ok"] is True


async def test_nothing_is_exported_without_a_configured_provider(kernel):
    sink = instrument(kernel)  # the global provider: a no-op until the user sets one up
    agent = ReActAgent("a", kernel.model("scripted:x", responses=["hi"]), kernel=kernel)
    await agent(Msg("user", "hi", "user"))
    assert not sink.tracer.start_span("probe").is_recording()
