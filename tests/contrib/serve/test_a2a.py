"""A2A served through aopkit_serve, exercised with the a2a-sdk's own client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from a2a.client import A2AClientError, ClientConfig, create_client
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError, InvalidParamsError

import aopkit
from aopkit_serve import build_app

from .a2a_agents import SECRET, Asker, Echo, Escalating, Failing

TOKEN = "a2a-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1 = {**AUTH, "A2A-Version": "1.0"}


def message(text: str, context: str = "", task: str = "", skill: str = "") -> pb.SendMessageRequest:
    request = pb.SendMessageRequest(
        message=pb.Message(
            role=pb.Role.ROLE_USER,
            message_id=f"m-{text}-{context}-{task}",
            parts=[pb.Part(text=text)],
            context_id=context,
            task_id=task,
        )
    )
    if skill:
        request.message.metadata.update({"skill": skill})
    return request


@pytest.fixture
async def a2a(kernel: aopkit.Kernel, serve: Any) -> AsyncIterator[Callable[..., Any]]:
    """``await a2a(agents, streaming=...)``: an sdk client of a server serving ``agents``."""
    http = httpx.AsyncClient(headers=AUTH)

    async def connect(agents: Any, *, streaming: bool = True, store: Any = None) -> Any:
        app = build_app(agents, token=TOKEN, kernel=kernel, store=store, protocols=("a2a",))
        url = await serve(app)
        return await create_client(url, ClientConfig(httpx_client=http, streaming=streaming))

    yield connect
    await http.aclose()


async def final(client: Any, request: pb.SendMessageRequest) -> tuple[pb.Task, list[str]]:
    """The task as the answer leaves it, and the artifact chunks' texts on the way."""
    task, chunks = pb.Task(), []
    async for response in client.send_message(request):
        kind = response.WhichOneof("payload")
        if kind == "task":
            task.CopyFrom(response.task)
        elif kind == "status_update":
            task.status.CopyFrom(response.status_update.status)
        elif kind == "artifact_update":
            chunks.append(response.artifact_update.artifact.parts[0].text)
            task.artifacts.append(response.artifact_update.artifact)
    return task, chunks


def said(task: pb.Task) -> str:
    return "\n".join(part.text for part in task.status.message.parts)


async def test_the_card_has_one_skill_per_agent_and_asks_for_a_bearer_token(kernel, serve):
    agents = [Echo("echo", kernel=kernel), Asker("asker", kernel=kernel)]
    url = await serve(build_app(agents, token=TOKEN, kernel=kernel, protocols=("a2a",)))
    async with httpx.AsyncClient(headers=AUTH) as http:
        client = await create_client(url, ClientConfig(httpx_client=http))
        card = await client.get_card() if hasattr(client, "get_card") else client._card
    assert [(s.id, s.name) for s in card.skills] == [("echo", "echo"), ("asker", "asker")]
    assert card.skills[0].description == "Echoes what it hears."
    assert card.capabilities.streaming
    (interface,) = card.supported_interfaces
    assert interface.url == url + "/a2a" and interface.protocol_version == "1.0"
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"


@pytest.mark.parametrize("streaming", [False, True])
async def test_send_and_stream_continue_a_context(a2a, kernel, streaming):
    client = await a2a(Echo("echo", kernel=kernel), streaming=streaming)
    first, _ = await final(client, message("hello", "ctx-1"))
    assert first.status.state == pb.TaskState.TASK_STATE_COMPLETED
    assert said(first) == "#1 hello" and first.context_id == "ctx-1"
    second, _ = await final(client, message("again", "ctx-1"))
    assert said(second) == "#2 again"
    fresh, _ = await final(client, message("other"))
    assert said(fresh) == "#1 other" and fresh.context_id not in ("", "ctx-1")


async def test_a_stream_shows_the_reply_as_it_grows(a2a, kernel):
    from .agents import Recall  # streams its reply in two chunks

    client = await a2a(Recall("recall", kernel=kernel), streaming=True)
    await final(client, message("abcd", "ctx-s"))
    task, chunks = await final(client, message("efgh", "ctx-s"))
    assert chunks == ["abcd", "|efgh", "abcd|efgh"]  # two appended parts, then the whole reply
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED


async def test_concurrent_contexts_never_see_each_other(a2a, kernel):
    client = await a2a(Echo("echo", kernel=kernel), streaming=False)

    async def talk(n: int) -> list[str]:
        return [said((await final(client, message(f"{n}-{i}", f"c{n}")))[0]) for i in range(3)]

    answers = await asyncio.gather(*(talk(n) for n in range(12)))
    for n, replies in enumerate(answers):
        assert replies == [f"#{i + 1} {n}-{i}" for i in range(3)]


async def test_a_restarted_server_continues_a_context(a2a, kernel, tmp_path):
    store = aopkit.SQLiteStore(tmp_path / "sessions.sqlite3")
    before = await a2a(Echo("echo", kernel=kernel), store=store)
    await final(before, message("one", "kept"))
    after = await a2a(
        Echo("echo", kernel=kernel), store=aopkit.SQLiteStore(tmp_path / "sessions.sqlite3")
    )
    task, _ = await final(after, message("two", "kept"))
    assert said(task) == "#2 two"


async def test_the_skill_picks_the_agent_and_an_unknown_one_is_refused(a2a, kernel):
    client = await a2a([Echo("echo", kernel=kernel), Echo("other", kernel=kernel)], streaming=False)
    task, _ = await final(client, message("hi", "k", skill="other"))
    assert said(task) == "#1 hi"
    task, _ = await final(client, message("hi", "k"))  # the first served agent: its own memory
    assert said(task) == "#1 hi"
    with pytest.raises(
        InvalidParamsError, match="no agent named 'nobody' is served; served: echo, other"
    ):
        await final(client, message("hi", "k", skill="nobody"))


async def test_a_failing_agent_fails_the_task_with_its_error_and_no_secret(a2a, kernel):
    client = await a2a(Failing("failing", kernel=kernel))
    task, _ = await final(client, message("go", "f"))
    assert task.status.state == pb.TaskState.TASK_STATE_FAILED
    assert "agent 'failing' failed to reply: RuntimeError: the database refused key" in said(task)
    assert SECRET not in said(task)


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_user_agent_waiting_for_the_client_is_input_required(a2a, kernel, streaming):
    client = await a2a(Asker("asker", kernel=kernel), streaming=streaming)
    task, _ = await final(client, message("hi", "ask"))
    assert task.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED
    assert said(task) == "asker: Which colour?"
    answered, _ = await final(client, message("blue", "ask", task=task.id))
    assert answered.status.state == pb.TaskState.TASK_STATE_COMPLETED
    assert said(answered) == "you chose blue"


async def test_a_follow_up_on_the_context_alone_answers_too(a2a, kernel):
    client = await a2a(Asker("asker", kernel=kernel), streaming=False)
    task, _ = await final(client, message("hi", "ask2"))
    assert task.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED
    answered, _ = await final(client, message("green", "ask2"))
    assert said(answered) == "you chose green"


async def test_an_escalation_asks_the_client(a2a, kernel):
    client = await a2a(Escalating("escalating", kernel=kernel), streaming=True)
    task, _ = await final(client, message("hi", "esc"))
    assert task.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED
    assert "could not produce a valid Answer: no valid answer" in said(task)
    answered, _ = await final(client, message("42", "esc", task=task.id))
    assert said(answered) == "resolved: 42"
    task, _ = await final(client, message("hi", "esc-abort"))
    aborted, _ = await final(client, message("Abort", "esc-abort", task=task.id))
    assert aborted.status.state == pb.TaskState.TASK_STATE_FAILED
    assert "aborted by a human" in said(aborted)


async def test_cancelling_a_task_waiting_for_input_frees_its_context(a2a, kernel):
    client = await a2a(
        [Asker("asker", kernel=kernel), Echo("echo", kernel=kernel)], streaming=False
    )
    task, _ = await final(client, message("hi", "cancelled"))
    canceled = await client.cancel_task(pb.CancelTaskRequest(id=task.id))
    assert canceled.status.state == pb.TaskState.TASK_STATE_CANCELED
    after, _ = await asyncio.wait_for(final(client, message("next", "cancelled", skill="echo")), 10)
    assert said(after) == "#1 next"


async def test_a_wrong_token_is_refused(kernel, serve):
    url = await serve(
        build_app(Echo("echo", kernel=kernel), token=TOKEN, kernel=kernel, protocols=("a2a",))
    )
    async with httpx.AsyncClient(headers={"Authorization": "Bearer nope"}) as http:
        with pytest.raises(A2AClientError) as caught:
            await create_client(url, ClientConfig(httpx_client=http))
        assert "401" in str(caught.value)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/a2a", json={}, headers={"A2A-Version": "1.0"}) as response,
    ):
        assert response.status == 401 and TOKEN not in await response.text()


HI = {"role": "ROLE_USER", "messageId": "x", "parts": [{"text": "hi"}]}


def send(message: dict[str, Any]) -> bytes:
    request = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    return json.dumps(request).encode()


GARBAGE: list[tuple[bytes, int, str]] = [
    (b"{not json", -32700, "not JSON"),
    (b"\xff\xfe", -32700, "not JSON"),
    (b"[1, 2]", -32600, "batches"),
    (b'"text"', -32600, "request object"),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "SendMessage"}', -32600, "jsonrpc"),
    (b'{"jsonrpc": "2.0", "id": true, "method": "SendMessage"}', -32600, "id"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600, "method"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "message/explode"}', -32601, "not served"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": [1]}', -32602, "params"),
    (
        b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": 5}}',
        -32602,
        "params",
    ),
    (send({"role": "ROLE_USER", "messageId": "x", "parts": []}), -32602, "text part"),
    (send({**HI, "contextId": "../etc"}), -32602, "contextId"),
    (
        b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such-task"}}',
        -32001,
        "",
    ),
]


async def test_garbage_json_rpc_gets_json_rpc_errors(kernel, serve):
    url = await serve(
        build_app(Echo("echo", kernel=kernel), token=TOKEN, kernel=kernel, protocols=("a2a",))
    )
    async with aiohttp.ClientSession(headers=V1) as http:
        for body, code, says in GARBAGE:
            async with http.post(url + "/a2a", data=body) as response:
                assert response.status == 200, body
                error = (await response.json())["error"]
                assert error["code"] == code, (body, error)
                assert says in error["message"], (body, error)
        request = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
        async with http.post(url + "/a2a", json=request, headers={"A2A-Version": "0.3"}) as old:
            assert "A2A 1.0" in (await old.json())["error"]["message"]
    # the server still answers properly afterwards
    async with httpx.AsyncClient(headers=AUTH) as http:
        client = await create_client(url, ClientConfig(httpx_client=http, streaming=False))
        task, _ = await final(client, message("still fine", "after"))
        assert said(task) == "#1 still fine"


async def test_the_sdk_raises_its_own_errors_for_ours(a2a, kernel):
    client = await a2a(Echo("echo", kernel=kernel))
    with pytest.raises(A2AError):
        await client.get_task(pb.GetTaskRequest(id="missing"))


async def test_only_the_latest_finished_tasks_are_kept(kernel, serve, monkeypatch):
    from aopkit_serve import _a2a

    monkeypatch.setattr(_a2a, "TASKS_KEPT", 2)
    app = build_app(Echo("echo", kernel=kernel), token=TOKEN, kernel=kernel, protocols=("a2a",))
    url = await serve(app)
    async with httpx.AsyncClient(headers=AUTH) as http:
        client = await create_client(url, ClientConfig(httpx_client=http, streaming=False))
        tasks = [(await final(client, message(str(n), "many")))[0] for n in range(4)]
        for gone in tasks[:2]:
            with pytest.raises(A2AError, match="not found"):
                await client.get_task(pb.GetTaskRequest(id=gone.id))
        for kept in tasks[2:]:
            found = await client.get_task(pb.GetTaskRequest(id=kept.id))
            assert found.status.state == pb.TaskState.TASK_STATE_COMPLETED


async def test_a_task_sent_without_waiting_can_be_followed_and_polled(kernel, serve):
    from .a2a_agents import Slow

    app = build_app(Slow("slow", kernel=kernel), token=TOKEN, kernel=kernel, protocols=("a2a",))
    url = await serve(app)
    async with httpx.AsyncClient(headers=AUTH) as http:
        sender = await create_client(url, ClientConfig(httpx_client=http, streaming=False))
        follower = await create_client(url, ClientConfig(httpx_client=http))
        request = message("0.5", "later")
        request.configuration.return_immediately = True
        started, _ = await final(sender, request)
        assert started.status.state != pb.TaskState.TASK_STATE_COMPLETED
        states = [
            response.status_update.status.state
            async for response in follower.subscribe(pb.SubscribeToTaskRequest(id=started.id))
            if response.HasField("status_update")
        ]
        assert states[-1] == pb.TaskState.TASK_STATE_COMPLETED
        polled = await sender.get_task(pb.GetTaskRequest(id=started.id))
        assert said(polled) == "slept 0.5"
        listed = await sender.list_tasks(pb.ListTasksRequest(context_id="later"))
        assert [task.id for task in listed.tasks] == [started.id]
