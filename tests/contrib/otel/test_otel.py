"""Events become OpenTelemetry spans and metrics, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import json

import attrs
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aopkit import AopkitError, Msg, MsgHub, ReActAgent, Toolkit, ToolUseBlock, hookimpl
from aopkit.faults import FaultPolicy, Resolution
from aopkit.model_agent import ModelAgent
from aopkit.models import ModelUnavailable
from aopkit.retry import NO_RETRY
from aopkit.testing.fakes.gemini import FakeGemini
from aopkit.testing.fakes.gemini import chunk as gemini_chunk
from aopkit_otel import OtelSink, instrument


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


def _spans(exporter):
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_a_session_agent_s_spans_carry_its_session_as_the_conversation(kernel, otel):
    exporter, _ = otel
    agent = ReActAgent("a", kernel.model("scripted:x", responses=["hi", "hi"]), kernel=kernel)
    await agent.session("user-42")(Msg("user", "hi", "user"))
    spans = _spans(exporter)
    assert spans["invoke_agent a"].attributes["gen_ai.conversation.id"] == "user-42"
    assert spans["chat x"].attributes["gen_ai.conversation.id"] == "user-42"
    await agent(Msg("user", "hi", "user"))  # the definition itself is in no conversation
    assert "gen_ai.conversation.id" not in exporter.get_finished_spans()[-1].attributes


async def test_contents_stay_out_of_spans_unless_asked_and_then_lose_secrets(kernel):
    kernel.secrets.add("sk-live-SECRET-77")
    for capture in (False, True):
        exporter, provider = InMemorySpanExporter(), TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        sink = instrument(kernel, tracer_provider=provider, capture_content=capture)
        model = kernel.model("scripted:x", responses=["the key is sk-live-SECRET-77"])
        await ReActAgent("a", model, kernel=kernel)(Msg("user", "key?", "user"))
        kernel.unregister("otel")
        spans = exporter.get_finished_spans()
        dumped = repr([dict(s.attributes) for s in spans])
        assert "sk-live-SECRET-77" not in dumped
        output = spans[-1].attributes.get("gen_ai.output.messages")
        if not capture:
            assert output is None and "the key is" not in dumped
        else:
            message = json.loads(output)
            assert message == [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": "the key is ***"}],
                    "finish_reason": "stop",
                }
            ]
        assert sink.capture_content is capture
    with pytest.raises(AopkitError, match="needs the kernel"):
        OtelSink(capture_content=True)


async def test_an_http_model_s_span_names_its_server_and_the_conventions_provider(
    kernel, otel, serve
):
    exporter, _ = otel
    fake = FakeGemini(key="k")
    base = await serve(fake.app())
    fake.answer_with(gemini_chunk({"text": "Hello"}, finish="STOP", response_id="r-9"))
    model = kernel.model("gemini:gemini-test", base_url=base, api_key="k", retry=NO_RETRY)
    await model([Msg("user", "hi", "user")], structured={"type": "object"})
    chat = _spans(exporter)["chat gemini-test"].attributes
    port = int(base.rsplit(":", 1)[1])
    assert (chat["server.address"], chat["server.port"]) == ("127.0.0.1", port)
    assert chat["gen_ai.provider.name"] == "gcp.gemini"  # the conventions' name for Gemini
    assert chat["gen_ai.output.type"] == "json"
    assert chat["gen_ai.response.id"] == "r-9"
    assert chat["gen_ai.response.model"] == "gemini-test-001"
    assert tuple(chat["gen_ai.response.finish_reasons"]) == ("stop",)


def test_a_base_url_s_credentials_never_become_the_server_address(kernel):
    model = kernel.model("openai:gpt", base_url="https://user:pw-123@proxy.example:8443/v1?key=z")
    assert model.server == ("proxy.example", 8443)
    assert kernel.model("openai:gpt", base_url="https://api.example/v1").server == (
        "api.example",
        443,
    )
    assert kernel.model("openai:gpt", base_url="http://h:notaport/v1").server is None
    assert kernel.model("scripted:x").server is None


async def test_the_innermost_hub_is_the_conversation_and_leaving_it_ends_that(kernel, otel):
    exporter, _ = otel
    agent = ReActAgent("a", kernel.model("scripted:x", responses=["1", "2", "3"]), kernel=kernel)
    async with MsgHub([agent], name="outer", kernel=kernel):
        async with MsgHub([agent], name="inner", kernel=kernel):
            await agent(Msg("user", "hi", "user"))
        await agent(Msg("user", "hi", "user"))
    await agent(Msg("user", "hi", "user"))
    replies = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent a"]
    assert [s.attributes.get("gen_ai.conversation.id") for s in replies] == [
        "inner",
        "outer",
        None,
    ]
