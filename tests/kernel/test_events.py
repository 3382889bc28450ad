import asyncio
import json

from loguru import logger

from aopkit import Msg, MsgHub, hookimpl
from aopkit.events import (
    EVENT_TYPES,
    HubJoined,
    MessageSent,
    ModelCallFinished,
    ReplyFinished,
    ReplyStarted,
)
from aopkit.sinks import ChatLog, JsonlTrace

from .helpers import Echo, Recorder


async def conversation(kernel):
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    async with MsgHub([alice, bob], Msg("host", "welcome", "system"), name="room"):
        await alice()
        await bob()


async def test_events_arrive_in_order(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    await conversation(kernel)
    kinds = [e.type for e in recorder.events]
    assert kinds == [
        "hub_joined",
        "hub_joined",
        "message_sent",
        "observed",
        "observed",
        "reply_started",
        "message_sent",
        "reply_finished",
        "observed",
        "reply_started",
        "message_sent",
        "reply_finished",
        "observed",
        "hub_left",
        "hub_left",
    ]
    times = [e.time for e in recorder.events]
    assert times == sorted(times)


async def test_jsonl_trace_holds_every_event_and_loads_back(kernel, tmp_path):
    recorder, trace = Recorder(), JsonlTrace(tmp_path / "trace.jsonl")
    kernel.register(recorder, "recorder")
    kernel.register(trace, "trace")
    await conversation(kernel)
    trace.close()
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == [e.type for e in recorder.events]
    assert [kernel.codec.load_event(json.loads(line)) for line in lines] == recorder.events


def test_every_event_type_round_trips(kernel):
    msg = Msg("a", "x", "user")
    samples = {
        "message_sent": {"msg": msg, "hubs": ("h",)},
        "hub_joined": {"hub": "h", "agent": "a"},
        "hub_left": {"hub": "h", "agent": "a"},
        "reply_started": {"agent": "a", "inputs": ("1",)},
        "reply_finished": {"agent": "a", "msg_id": "1", "seconds": 0.1},
        "reply_failed": {"agent": "a", "error": "E", "seconds": 0.1},
        "observed": {"agent": "a", "msg_id": "1"},
        "model_call_started": {"model": "m", "call_id": "c", "agent": "a", "hubs": ("h",)},
        "model_call_finished": {
            "model": "m",
            "call_id": "c",
            "seconds": 1.0,
            "usage": {"input": 3},
            "agent": "a",
        },
        "budget_reached": {
            "account": "agent 'a'",
            "limit": "calls",
            "allowed": 2,
            "used": 2,
            "model": "m",
            "agent": "a",
        },
        "retried": {"model": "m", "call_id": "c", "attempt": 2, "error": "429", "wait": 1.5},
        "corrected": {"corrector": "json-repair", "ok": True},
        "critique_round": {"critic": "self", "round": 1, "accepted": False},
        "escalated": {"incident": "i1", "reason": "no valid JSON"},
        "tool_started": {"tool": "search", "call_id": "c"},
        "tool_finished": {"tool": "search", "call_id": "c", "seconds": 0.1, "error": None},
        "reply_chunk": {"agent": "a", "text": "Hel"},
        "state_saved": {"session": "s", "agents": ("a",)},
        "state_loaded": {"session": "s", "agents": ("a",)},
        "round_finished": {
            "run": "guess",
            "round": 3,
            "agents": 10,
            "replied": 9,
            "failed": 1,
            "seconds": 0.5,
            "aggregates": {"average": 33.3},
        },
        "compacted": {
            "agent": "a",
            "strategies": ("summarise",),
            "tokens_before": 900,
            "tokens_after": 300,
            "removed": ("1", "2"),
            "added": (Msg("summary", "They met.", "user"),),
        },
    }
    assert set(samples) == set(EVENT_TYPES)
    for tag, fields in samples.items():
        event = EVENT_TYPES[tag](**fields)
        assert kernel.codec.load_event(json.loads(kernel.codec.dumps_event(event))) == event


async def test_chat_log_shows_the_conversation_at_chat_level(kernel):
    lines = []
    sink = logger.add(
        lambda m: lines.append((m.record["level"].name, m.record["message"])), level="CHAT"
    )
    try:
        kernel.register(ChatLog(), "chat")
        await conversation(kernel)
    finally:
        logger.remove(sink)
    assert lines == [("CHAT", "host: welcome"), ("CHAT", "alice: alice: "), ("CHAT", "bob: bob: ")]


async def test_a_failing_listener_is_logged_and_does_not_break_the_run(kernel):
    class Broken:
        @hookimpl
        def event(self, event):
            raise RuntimeError("sink exploded")

    errors = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    kernel.register(Broken(), "broken")
    try:
        await conversation(kernel)
    finally:
        logger.remove(sink)
    assert len(recorder.of(ReplyFinished)) == 2
    assert errors and "event listener" in errors[0]


async def test_async_listeners_are_run_as_tasks(kernel):
    got = []

    class Slow:
        @hookimpl
        async def event(self, event):
            await asyncio.sleep(0)
            got.append(event.type)

    kernel.register(Slow(), "slow")
    await conversation(kernel)
    await asyncio.sleep(0.01)
    assert "reply_finished" in got and len(got) == 15


def test_no_listener_means_no_event_is_built(kernel, monkeypatch):
    built = []
    monkeypatch.setattr(
        ReplyStarted, "__attrs_post_init__", lambda self: built.append(self), raising=False
    )
    asyncio.run(Echo("e", kernel=kernel)(Msg("u", "x", "user")))
    assert not kernel.observed
    assert built == []


def test_events_carry_their_data(kernel):
    event = ModelCallFinished(model="openai:gpt", call_id="c1", seconds=0.5, usage={"output": 7})
    assert kernel.codec.dump_event(event)["usage"] == {"output": 7}
    assert HubJoined(hub="h", agent="a").type == "hub_joined"
    assert MessageSent.type == "message_sent"
