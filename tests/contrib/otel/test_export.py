"""``aopkit_otel.setup`` exports to a real OTLP/HTTP collector: a loopback aiohttp server that
decodes the protobuf requests as a collector does."""

from __future__ import annotations

import gzip
import logging

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

import aopkit_otel
from aopkit import AopkitError, Msg, MsgHub, ReActAgent, Toolkit, ToolUseBlock

TOKEN = "otlp-token-5d1c9a"


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs):
    return {pair.key: _value(pair.value) for pair in pairs}


class Collector:
    """Accepts OTLP/HTTP protobuf exports carrying the expected bearer token; keeps what came."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.spans: list = []  # (resource attributes, span)
        self.metrics: list = []  # metric names
        self.bodies: list[bytes] = []
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self.traces)
        self.app.router.add_post("/v1/metrics", self.metrics_)

    async def _body(self, request: web.Request) -> bytes | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused += 1
            return None
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        return body

    async def traces(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return web.Response(status=401, text="bad token")
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope_spans.spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def metrics_(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return web.Response(status=401, text="bad token")
        export = ExportMetricsServiceRequest()
        export.ParseFromString(body)
        for resource_metrics in export.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                self.metrics.extend(m.name for m in scope_metrics.metrics)
        reply = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def _debate(kernel) -> MsgHub:
    model = kernel.model(
        "scripted:brain", responses=[[ToolUseBlock("c1", "multiply", {"a": 6, "b": 7})], "42."]
    )
    helper = ReActAgent("helper", model, toolkit=Toolkit([multiply], kernel=kernel), kernel=kernel)
    hub = MsgHub([helper], name="maths-hub", kernel=kernel)
    async with hub:
        await helper(Msg("user", "6 times 7?", "user"))
    return hub


async def test_setup_exports_spans_and_metrics_to_an_otlp_collector(kernel, serve, caplog):
    collector = Collector(TOKEN)
    base = await serve(collector.app)
    telemetry = aopkit_otel.setup(
        base,
        service_name="debate-test",
        headers={"Authorization": f"Bearer {TOKEN}"},
        kernel=kernel,
        set_global=False,
    )
    async with telemetry:
        await _debate(kernel)
        assert TOKEN not in repr(telemetry)
    assert telemetry.closed and kernel.pm.get_plugin("otel") is None  # stopped listening

    spans = {span.name: (resource, span) for resource, span in collector.spans}
    assert sorted(span.name for _, span in collector.spans) == [
        "chat brain",
        "chat brain",
        "execute_tool multiply",
        "invoke_agent helper",
    ]
    resource, agent = spans["invoke_agent helper"]
    assert resource["service.name"] == "debate-test"
    assert _attributes(agent.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "helper",
        "gen_ai.conversation.id": "maths-hub",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "brain",
    }
    chats = [span for _, span in collector.spans if span.name == "chat brain"]
    first, second = sorted(chats, key=lambda s: s.start_time_unix_nano)
    first_attributes = _attributes(first.attributes)
    for kind in ("input", "output"):  # the scripted model reports the kernel's estimates
        assert first_attributes.pop(f"gen_ai.usage.{kind}_tokens") > 0
    assert first_attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "brain",
        "gen_ai.request.stream": False,
        "gen_ai.conversation.id": "maths-hub",
        "gen_ai.response.id": "scripted-1",
        "gen_ai.response.model": "brain",
        "gen_ai.response.finish_reasons": ["tool_use"],
    }
    assert _attributes(second.attributes)["gen_ai.response.finish_reasons"] == ["stop"]
    tool = _attributes(spans["execute_tool multiply"][1].attributes)
    assert tool["gen_ai.tool.call.id"] == "c1" and tool["gen_ai.conversation.id"] == "maths-hub"
    for _, span in collector.spans:
        assert span.trace_id == agent.trace_id
        if span is not agent:
            assert span.parent_span_id == agent.span_id
    assert "gen_ai.client.token.usage" in collector.metrics
    assert "gen_ai.client.operation.duration" in collector.metrics
    assert collector.refused == 0
    # the token went in a header, and nowhere else: not a span, not a log line, not a repr
    assert not any(TOKEN.encode() in body for body in collector.bodies)
    assert TOKEN not in caplog.text
    assert kernel.secrets.redact(f"sent {TOKEN}") == "sent ***"


async def test_a_collector_refusing_the_token_leaks_it_nowhere(kernel, serve, caplog):
    collector = Collector("another-token")
    base = await serve(collector.app)
    caplog.set_level(logging.DEBUG)
    telemetry = aopkit_otel.setup(
        base, headers={"x-api-key": TOKEN}, kernel=kernel, set_global=False, timeout=2
    )
    await _debate(kernel)
    assert await telemetry.aflush() in (True, False)  # the export failed; the flush returns
    await telemetry.aclose()
    await telemetry.aclose()  # twice is harmless
    assert collector.refused >= 1 and collector.spans == []
    assert TOKEN not in caplog.text
    assert kernel.secrets.redact(TOKEN) == "***"  # a header of any name is a credential


@pytest.mark.parametrize(
    "endpoint",
    [
        "127.0.0.1:4318",
        "ftp://collector:4318",
        "http://",
        "http://user:pa55word@collector:99999",
        None,
    ],
)
def test_an_endpoint_that_is_not_an_http_url_is_a_clear_error(kernel, endpoint):
    with pytest.raises(AopkitError, match="not an http\\(s\\) URL of an OTLP/HTTP") as caught:
        aopkit_otel.setup(endpoint, kernel=kernel, set_global=False)
    assert "pa55word" not in str(caught.value)
    assert kernel.pm.get_plugin("otel") is None  # nothing half-installed


def test_setup_needs_no_running_loop_and_closes_with_a_plain_with(kernel):
    with aopkit_otel.setup("http://127.0.0.1:9", kernel=kernel, set_global=False) as telemetry:
        assert kernel.pm.get_plugin("otel") is telemetry.sink
    assert telemetry.closed


def test_a_second_setup_on_one_kernel_is_refused_until_the_first_is_closed(kernel):
    first = aopkit_otel.setup("http://127.0.0.1:9", kernel=kernel, set_global=False)
    with pytest.raises(AopkitError, match="already instrumented"):
        aopkit_otel.setup("http://127.0.0.1:9", kernel=kernel, set_global=False)
    assert kernel.pm.get_plugin("otel") is first.sink
    first.shutdown()
    aopkit_otel.setup("http://127.0.0.1:9", kernel=kernel, set_global=False).shutdown()
