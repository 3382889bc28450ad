"""Each injected fault, end to end over real HTTP: which tier resolves it, how many model calls
it costs, and that every memory holds each message exactly once."""

from __future__ import annotations

import attrs
import pytest

from aopkit import ModelAgent, Msg, ReActAgent, Toolkit
from aopkit.events import Retried
from aopkit.retry import RetryPolicy
from tests.kernel.helpers import Recorder

from .fault_server import (
    Answer,
    Anthropic,
    CutStream,
    FaultServer,
    HTMLPage,
    OpenAI,
    Reset,
    Responses,
    Slow,
    Status,
)

FAST = RetryPolicy(attempts=4, initial=0.01, max_wait=0.05, jitter=0)
GOOD = '{"winner": "alice", "score": 7}'
ASK = Msg("host", "Who won the debate?", "user")

DIALECTS = {
    "openai": (OpenAI, "openai:gpt-test", "/v1"),
    "anthropic": (Anthropic, "anthropic:claude-test", ""),
    "openai-responses": (Responses, "openai-responses:gpt-test", "/v1"),
}


@attrs.frozen
class Verdict:
    winner: str
    score: int


@pytest.fixture(params=sorted(DIALECTS))
async def setup(request, kernel, serve):
    dialect, name, suffix = DIALECTS[request.param]
    server = FaultServer(dialect())
    base = await serve(server.app())
    model = kernel.model(
        name, base_url=base + suffix, api_key="sk-fault-test", timeout=0.3, retry=FAST
    )
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    return server, model, recorder


def assert_memory_holds_each_message_once(agent, expected):
    ids = [m.id for m in agent.memory]
    assert len(ids) == len(set(ids)) == expected


def only_fault(kernel):
    [fault] = kernel.faults.faults
    return fault


@pytest.mark.parametrize(
    "fault",
    [
        Status(429, {"Retry-After": "0.05"}),
        Status(429),
        Status(500),
        Status(502),
        Status(503),
        Slow(1.0),
        Reset(),
        HTMLPage(502),
    ],
    ids=["429-retry-after", "429", "500", "502", "503", "slow-first-byte", "reset", "html-page"],
)
async def test_accessibility_faults_are_resolved_by_tier_1(setup, kernel, fault):
    server, model, recorder = setup
    server.queue(fault)
    agent = ModelAgent("judge", model, kernel=kernel)
    reply = await agent(ASK)
    assert reply.text == "ok"
    assert len(server.requests) == 2, "one failed call, one retry"
    fault_row = only_fault(kernel)
    assert (fault_row.kind, fault_row.tier, fault_row.calls) == ("accessibility", 1, 1)
    [retry] = recorder.of(Retried)
    if isinstance(fault, Status) and "Retry-After" in fault.headers:
        assert retry.wait >= 0.05, "Retry-After is honoured"
    if isinstance(fault, HTMLPage):
        assert "HTML page" in retry.error
    assert_memory_holds_each_message_once(agent, 2)


async def test_a_stream_cut_mid_event_is_retried_by_tier_1(setup, kernel):
    server, model, _ = setup
    server.queue(CutStream("a partial answer"))
    server.default = Answer("the whole answer")
    agent = ReActAgent("judge", model, kernel=kernel, stream=True)
    reply = await agent(ASK)
    assert reply.text == "the whole answer"
    assert len(server.requests) == 2 and all(r["stream"] for r in server.requests)
    assert only_fault(kernel).tier == 1
    assert_memory_holds_each_message_once(agent, 2)


async def test_exhausted_retries_are_a_clear_error_and_nothing_is_stored_twice(setup, kernel):
    server, model, _ = setup
    server.queue(*[Status(503)] * 4)
    agent = ModelAgent("judge", model, kernel=kernel)
    with pytest.raises(Exception, match="HTTP 503"):
        await agent(ASK)
    assert len(server.requests) == 4
    assert only_fault(kernel).tier is None
    assert_memory_holds_each_message_once(agent, 1)  # the question, and no reply


async def test_malformed_json_in_content_is_fixed_by_tier_2(setup, kernel):
    server, model, _ = setup
    server.queue(Answer("Here you go:\n```json\n{'winner': 'alice', 'score': 7,}\n```"))
    agent = ModelAgent("judge", model, kernel=kernel)
    assert await agent(ASK, structured=Verdict) == Verdict("alice", 7)
    assert len(server.requests) == 1, "no second model call"
    fault = only_fault(kernel)
    assert (fault.tier, fault.calls, fault.saved) == (2, 0, 1)
    assert_memory_holds_each_message_once(agent, 2)


async def test_schema_violating_json_is_resolved_by_tier_3(setup, kernel):
    server, model, _ = setup
    server.queue(Answer('{"winner": "alice"}'), Answer(GOOD))
    agent = ModelAgent("judge", model, kernel=kernel)
    assert await agent(ASK, structured=Verdict) == Verdict("alice", 7)
    assert len(server.requests) == 2
    fault = only_fault(kernel)
    assert (fault.kind, fault.tier, fault.resolver, fault.calls) == ("invalid", 3, "self", 1)
    assert_memory_holds_each_message_once(agent, 2)


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def test_malformed_tool_arguments_are_fixed_by_tier_2_before_the_tool_runs(setup, kernel):
    server, model, _ = setup
    server.queue(Answer(tools=(("multiply", '{"a": 6, "b": "7"}'),)), Answer("42"))
    agent = ReActAgent("calc", model, toolkit=Toolkit([multiply], kernel=kernel), kernel=kernel)
    assert (await agent(ASK)).text == "42"
    assert len(server.requests) == 2, "the tool call, then the answer: no extra call"
    fault = only_fault(kernel)
    assert (fault.tier, fault.saved) == (2, 1)
    second = server.requests[1]
    tool_result = (second.get("messages") or second["input"])[-1]
    assert "42" in str(tool_result)
    assert_memory_holds_each_message_once(agent, 4)


async def test_unresolvable_output_becomes_an_incident(setup, kernel):
    from aopkit.faults import Unresolved

    server, model, _ = setup
    server.default = Answer("I refuse to answer in JSON.")
    agent = ModelAgent("judge", model, kernel=kernel)
    with pytest.raises(Exception) as info:
        await agent(ASK, structured=Verdict)
    incident = info.value.__cause__.incident
    assert isinstance(info.value.__cause__, Unresolved)
    assert incident.outputs == ["I refuse to answer in JSON."] * 3
    assert len(server.requests) == 3
    assert kernel.incidents.load()[0]["id"] == incident.id
    assert_memory_holds_each_message_once(agent, 1)


@pytest.mark.parametrize("provider", ["openai", "openai-responses"])
async def test_unparseable_tool_argument_text_is_repaired_by_tier_2(kernel, serve, provider):
    """OpenAI-style APIs send arguments as text, which can be broken JSON."""
    dialect, name, suffix = DIALECTS[provider]
    server = FaultServer(dialect())
    base = await serve(server.app())
    model = kernel.model(name, base_url=base + suffix, api_key="k", retry=FAST)
    server.queue(Answer(tools=(("multiply", "{'a': 6, 'b': 7,}"),)), Answer("42"))
    agent = ReActAgent("calc", model, toolkit=Toolkit([multiply], kernel=kernel), kernel=kernel)
    assert (await agent(ASK)).text == "42"
    assert len(server.requests) == 2
    fault = only_fault(kernel)
    assert (fault.kind, fault.tier, fault.resolver) == ("malformed", 2, "json-repair")
    second = server.requests[1]
    if provider == "openai":
        sent_back = second["messages"][1]["tool_calls"][0]["function"]["arguments"]
    else:
        sent_back = second["input"][1]["arguments"]
    assert sent_back == '{"a": 6, "b": 7}', "the repaired call is what the history keeps"
