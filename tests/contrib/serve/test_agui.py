"""AG-UI at /ag-ui: every event of the stream is parsed and validated with ag-ui-protocol's own
models, and the stream is checked to be well formed (a run opens and closes once, messages and
tool calls open before they carry anything and close before the run ends)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from ag_ui.core import Event, EventType, RunAgentInput
from pydantic import TypeAdapter

import aopkit
from aopkit import ReActAgent, Toolkit, ToolUseBlock
from aopkit.models import ModelError, ModelUnavailable
from aopkit.retry import RetryPolicy
from aopkit_serve import build_app

from .agents import Recall

PROTOCOLS = ("agui",)
TOKEN = "agui-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
SECRET = "sk-agui-secret-0000"
EVENT: TypeAdapter[Any] = TypeAdapter(Event)  # the protocol's union of every event


def run_input(text: str = "hi", thread: str = "t1", **extra: Any) -> dict[str, Any]:
    body = {
        "threadId": thread,
        "runId": "r1",
        "messages": [{"id": "m1", "role": "user", "content": text}],
        **extra,
    }
    RunAgentInput.model_validate(body)  # what we send is valid input
    return body


async def events_of(url: str, body: Any) -> list[Any]:
    """POST a run and parse every SSE event with the protocol's models."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/ag-ui", headers=HEADERS, json=body) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        raw = await response.text()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert all(f.startswith("data: ") for f in frames), raw
    return [EVENT.validate_json(f.removeprefix("data: ")) for f in frames]


def well_formed(events: list[Any]) -> list[EventType]:
    """The stream's shape, checked; returns the event types in order."""
    types = [e.type for e in events]
    assert types[0] == EventType.RUN_STARTED
    assert types[-1] in (EventType.RUN_FINISHED, EventType.RUN_ERROR)
    assert types.count(EventType.RUN_STARTED) == 1
    open_text: set[str] = set()
    open_calls: set[str] = set()
    ended_calls: set[str] = set()
    for e in events:
        if e.type == EventType.TEXT_MESSAGE_START:
            assert not open_text
            open_text.add(e.message_id)
        elif e.type == EventType.TEXT_MESSAGE_CONTENT:
            assert e.message_id in open_text and e.delta
        elif e.type == EventType.TEXT_MESSAGE_END:
            open_text.remove(e.message_id)
        elif e.type == EventType.TOOL_CALL_START:
            open_calls.add(e.tool_call_id)
        elif e.type == EventType.TOOL_CALL_ARGS:
            assert e.tool_call_id in open_calls
        elif e.type == EventType.TOOL_CALL_END:
            open_calls.remove(e.tool_call_id)
            ended_calls.add(e.tool_call_id)
        elif e.type == EventType.TOOL_CALL_RESULT:
            ended_calls.remove(e.tool_call_id)
    assert not open_text and not open_calls
    return types


def texts(events: list[Any]) -> list[str]:
    """The text messages, each put together from its deltas."""
    out: dict[str, str] = {}
    for e in events:
        if e.type == EventType.TEXT_MESSAGE_CONTENT:
            out[e.message_id] = out.get(e.message_id, "") + e.delta
    return list(out.values())


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.fixture
def served(kernel, serve):
    async def start(*agents: aopkit.Agent) -> str:
        kernel.secrets.add(SECRET)
        return await serve(build_app(list(agents), token=TOKEN, protocols=("agui",)))

    return start


async def test_a_streaming_model_streams_token_by_token(kernel, served):
    model = kernel.model("scripted:s", responses=["The answer is forty-two, exactly."])
    url = await served(ReActAgent("helper", model, stream=True, kernel=kernel))
    events = await events_of(url, run_input())
    types = well_formed(events)
    assert types.count(EventType.TEXT_MESSAGE_CONTENT) > 2  # chunks, not one block
    assert texts(events) == ["The answer is forty-two, exactly."]
    assert events[-1].result == "The answer is forty-two, exactly."
    assert events[0].thread_id == events[-1].thread_id == "t1"
    snapshots = [e.snapshot for e in events if e.type == EventType.STATE_SNAPSHOT]
    assert snapshots[0] == {"conversation": "t1", "agents": ["helper"], "agent": "helper",
                            "messages": 0}  # fmt: skip
    assert snapshots[-1]["messages"] == 2  # the question and the answer


async def test_a_react_agent_shows_its_tool_calls_and_results(kernel, served):
    model = kernel.model(
        "scripted:s",
        responses=[[ToolUseBlock("c1", "multiply", {"a": 6, "b": 7})], "It is 42."],
    )
    agent = ReActAgent("helper", model, toolkit=Toolkit([multiply], kernel=kernel), kernel=kernel)
    events = await events_of(await served(agent), run_input("6 times 7?"))
    types = well_formed(events)
    start = types.index(EventType.TOOL_CALL_START)
    assert types[start : start + 4] == [
        EventType.TOOL_CALL_START,
        EventType.TOOL_CALL_ARGS,
        EventType.TOOL_CALL_END,
        EventType.TOOL_CALL_RESULT,
    ]
    call, args, _, result = events[start : start + 4]
    assert (call.tool_call_id, call.tool_call_name) == ("c1", "multiply")
    assert json.loads(args.delta) == {"a": 6, "b": 7}
    assert (result.tool_call_id, result.content) == ("c1", "42")
    assert texts(events) == ["It is 42."]
    assert types.index(EventType.TEXT_MESSAGE_START) > start  # the answer after the tool


async def test_retries_and_failures(kernel, served):
    busy = ModelUnavailable("scripted:s", "overloaded", status=503, retry_after=0.01)
    broken = ModelError("scripted:s", f"refused key {SECRET}", status=400)
    model = kernel.model(
        "scripted:s", responses=[busy, "fine", broken], retry=RetryPolicy(initial=0.001)
    )
    url = await served(ReActAgent("helper", model, kernel=kernel))
    events = await events_of(url, run_input())
    well_formed(events)
    [retried] = [e for e in events if e.type == EventType.CUSTOM]
    assert retried.name == "aopkit.retried" and "overloaded" in retried.value["error"]
    failed = await events_of(url, run_input("again"))
    assert well_formed(failed)[-1] == EventType.RUN_ERROR
    assert "refused key" in failed[-1].message and SECRET not in failed[-1].message
    assert "Traceback" not in failed[-1].message


async def test_a_thread_is_a_conversation(kernel, served):
    url = await served(Recall("recall", kernel=kernel), Recall("other", kernel=kernel))
    await events_of(url, run_input("one", thread="a"))
    assert texts(await events_of(url, run_input("two", thread="a"))) == ["one|two"]
    assert texts(await events_of(url, run_input("three", thread="b"))) == ["three"]
    other = run_input("x", thread="a", forwardedProps={"agent": "other"})
    assert texts(await events_of(url, other)) == ["x"]  # each agent its own memory


async def test_concurrent_threads_stay_apart(kernel, served):
    url = await served(Recall("recall", kernel=kernel))

    async def talk(n: int) -> list[str]:
        said = []
        for i in range(3):
            said += texts(await events_of(url, run_input(f"{n}-{i}", thread=f"t{n}")))
        return said

    for n, said in enumerate(await asyncio.gather(*(talk(n) for n in range(6)))):
        assert said == [f"{n}-0", f"{n}-0|{n}-1", f"{n}-0|{n}-1|{n}-2"]


async def test_a_client_that_leaves_cancels_the_run(kernel, served):
    url = await served(Recall("recall", kernel=kernel))
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{url}/ag-ui", headers=HEADERS, json=run_input("sleep:30", thread="gone")
        )
        assert response.status == 200
        await response.content.readuntil(b"\n\n")  # RUN_STARTED
        response.close()
    # the run was cancelled: the thread is free again, and kept the user's message
    reply = await asyncio.wait_for(events_of(url, run_input("back", thread="gone")), 10)
    assert texts(reply) == ["sleep:30|back"]


async def test_bad_requests_are_clear_json_errors(kernel, served):
    url = await served(Recall("recall", kernel=kernel))
    bad = [
        (b"not json", 400, "not an AG-UI RunAgentInput"),
        (b"[]", 400, "not an AG-UI RunAgentInput"),
        (json.dumps({"threadId": "t", "runId": "r"}).encode(), 400, "messages"),
        (json.dumps(run_input(forwardedProps={"agent": "nobody"})).encode(), 404, "nobody"),
        (json.dumps({**run_input(), "messages": []}).encode(), 400, "no user message"),
        (json.dumps(run_input(thread="../etc")).encode(), 400, "conversation id"),
        (json.dumps(run_input("x" * (2 << 20))).encode(), 413, "larger than"),
    ]
    async with aiohttp.ClientSession() as http:
        for raw, status, says in bad:
            async with http.post(f"{url}/ag-ui", headers=HEADERS, data=io.BytesIO(raw)) as response:
                assert response.status == status, raw
                assert says in (await response.json())["error"]
        for headers in ({}, {"Authorization": "Bearer nope"}):
            async with http.post(f"{url}/ag-ui", headers=headers, json=run_input()) as response:
                assert response.status == 401 and TOKEN not in await response.text()


async def test_a_new_server_on_the_store_continues_a_thread(kernel, serve, tmp_path):
    async def server() -> str:
        store = aopkit.SQLiteStore(tmp_path / "sessions.sqlite3")
        agent = Recall("recall", kernel=kernel)
        app = build_app(agent, token=TOKEN, store=store, protocols=PROTOCOLS)
        return await serve(app)

    await events_of(await server(), run_input("before", thread="kept"))
    after = await events_of(await server(), run_input("after", thread="kept"))
    assert texts(after) == ["before|after"]
