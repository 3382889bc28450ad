"""Model-call metrics as the GenAI semantic conventions name them, checked with the SDK's
in-memory reader: what a server did not report is not recorded."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aopkit import ModelAgent, Msg, TextBlock, Usage
from aopkit.models import ChatResponse, ModelRejected
from aopkit_otel import instrument
from aopkit_otel.model_metrics import DURATION_BUCKETS, TOKEN_BUCKETS


def _takes_bucket_advice() -> bool:
    """Older OpenTelemetry SDKs (before 1.23) take no bucket advice: they use their default
    buckets, and so does aopkit_otel there."""
    provider = MeterProvider()
    try:
        create = provider.get_meter("probe").create_histogram
        return "explicit_bucket_boundaries_advisory" in inspect.signature(create).parameters
    finally:
        provider.shutdown()


ADVICE = _takes_bucket_advice()


@pytest.fixture
def reader(kernel):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(kernel, meter_provider=provider)
    yield reader
    provider.shutdown()


def collected(reader):
    """Each metric's points, from one collection (older SDKs report a point once)."""
    found = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                found.setdefault(m.name, []).extend(m.data.data_points)
    return found


async def test_token_usage_by_type_agent_and_model_unknown_left_out(kernel, reader):
    responses = [
        ChatResponse([TextBlock("a")], Usage(120, 30, reasoning_tokens=10), "stop"),
        ChatResponse([TextBlock("b")], Usage(None, 7), "stop"),  # input not reported
        ModelRejected("scripted:m", "bad request", status=400),
    ]
    agent = ModelAgent("judge", kernel.model("scripted:m", responses=responses), kernel=kernel)
    await agent(Msg("user", "one", "user"))
    await agent(Msg("user", "two", "user"))
    with pytest.raises(Exception, match="bad request"):
        await agent(Msg("user", "three", "user"))

    metrics = collected(reader)
    tokens = metrics["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens}
    assert (by_type["input"].count, by_type["input"].sum) == (1, 120)  # no zero for unknown
    assert (by_type["output"].count, by_type["output"].sum) == (2, 37)
    for point in tokens:
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.provider.name"] == "scripted"
        assert point.attributes["gen_ai.request.model"] == "m"
        assert point.attributes["gen_ai.agent.name"] == "judge"
        if ADVICE:  # the conventions' advice, where the API can take it
            assert list(point.explicit_bounds) == TOKEN_BUCKETS

    durations = metrics["gen_ai.client.operation.duration"]
    assert sum(p.count for p in durations) == 3
    failed = [p for p in durations if "error.type" in p.attributes]
    assert [p.attributes["error.type"] for p in failed] == ["ModelRejected"]
    if ADVICE:
        bounds = [float(b) for b in durations[0].explicit_bounds]
        assert bounds == pytest.approx(DURATION_BUCKETS)


def test_the_advised_buckets():
    assert TOKEN_BUCKETS[:3] == [1, 4, 16] and TOKEN_BUCKETS[-1] == 67108864
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] == pytest.approx(81.92)
