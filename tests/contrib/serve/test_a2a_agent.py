"""A2AAgent: a remote A2A agent in a hub, its failures through the fault tiers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from aiohttp import web

import aopkit
from aopkit.events import Retried
from aopkit.faults import Resolution, Unresolved
from aopkit.retry import RetryPolicy
from aopkit_serve import A2AAgent, RemoteAgentError, build_app

from .a2a_agents import SECRET, Asker, Echo, Failing, Slow

TOKEN = "a2a-agent-token-0123456789"
FAST = RetryPolicy(attempts=3, initial=0.01, max_wait=0.02, jitter=0)
HERE = Path(__file__).parent


class Says(aopkit.Agent):
    """A local participant with a fixed line."""

    def __init__(self, name: str, line: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.line = line

    async def reply(self, msg: Any) -> aopkit.Msg:
        return aopkit.Msg(self.name, self.line, "assistant")


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[str]:
    """``aopkit serve`` in a process of its own, serving a2a_agents.served; its URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aopkit",
            "serve",
            str(HERE / "a2a_agents.py:served"),
            "--port",
            "0",
            "--token",
            TOKEN,
            "--protocol",
            "a2a",
            "--store",
            str(tmp_path / "remote.sqlite3"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")},
    )
    with process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            found = re.search(r"at (http://\S+)/", line)
            assert found, f"no URL in {line!r}"
            yield found[1]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


async def test_a_remote_agent_takes_part_in_a_hub(kernel, remote):
    alice = Says("alice", "I think it is 4.", kernel=kernel)
    bob = Says("bob", "No, 5.", kernel=kernel)
    echo = A2AAgent(remote, token=TOKEN, skill="echo", kernel=kernel)
    async with aopkit.MsgHub([alice, bob, echo], "What is 2 + 2?", kernel=kernel):
        await alice()
        await bob()
        first = await echo()
        await alice()
        second = await echo()
    # the remote saw who said what, since its last turn; its replies reached the others
    assert first.text == "#1 user: What is 2 + 2?\nalice: I think it is 4.\nbob: No, 5."
    assert second.text == "#2 alice: I think it is 4."
    assert [m.text for m in bob.memory if m.name == "echo"] == [first.text, second.text]
    # the remote context is state: a restored agent continues the remote conversation
    state = echo.state_dict()
    assert state["context_id"] == echo.context_id and echo.context_id
    again = A2AAgent(remote, token=TOKEN, skill="echo", kernel=kernel)
    again.load_state_dict(state)
    assert (await again("and now?")).text == "#3 user: and now?"
    fresh = A2AAgent(remote, token=TOKEN, skill="echo", kernel=kernel)
    assert (await fresh("hello")).text == "#1 user: hello"


async def test_input_required_goes_to_the_escalate_hook(kernel, serve):
    url = await serve(build_app(Asker("asker", kernel=kernel), token=TOKEN, protocols=("a2a",)))
    asked: list[Any] = []

    class Human:
        @aopkit.hookimpl
        def escalate(self, incident: Any) -> Resolution:
            asked.append(incident)
            return Resolution("answer", "blue")

    kernel.register(Human(), "human")
    remote = A2AAgent(url, token=TOKEN, kernel=kernel)
    assert (await remote("hi")).text == "you chose blue"
    (incident,) = asked
    assert incident.request == "asker: Which colour?"
    assert incident.reason == "the remote agent asks for input"


async def test_input_required_without_an_answer_is_unresolved(kernel, serve):
    url = await serve(build_app(Asker("asker", kernel=kernel), token=TOKEN, protocols=("a2a",)))
    remote = A2AAgent(url, token=TOKEN, kernel=kernel)
    with pytest.raises(aopkit.ReplyError) as caught:
        await remote("hi")
    assert isinstance(caught.value.__cause__, Unresolved)
    assert "no answer for the remote agent" in str(caught.value)


async def test_a_remote_failing_task_is_a_clear_error_without_secrets(kernel, serve):
    app = build_app(Failing("failing", kernel=kernel), token=TOKEN, protocols=("a2a",))
    url = await serve(app)
    remote = A2AAgent(url, token=TOKEN, retry=FAST, kernel=kernel)
    with pytest.raises(aopkit.ReplyError) as caught:
        await remote("go")
    error = caught.value.__cause__
    assert isinstance(error, RemoteAgentError) and not error.retryable
    assert "the task failed: agent 'failing' failed to reply: RuntimeError" in str(error)
    assert SECRET not in str(error)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_server_down_is_retried_by_tier_1_then_a_clear_error(kernel):
    retried: list[Retried] = []

    class Watch:
        @aopkit.hookimpl
        def event(self, event: Any) -> None:
            if isinstance(event, Retried):
                retried.append(event)

    kernel.register(Watch(), "watch")
    remote = A2AAgent(f"http://127.0.0.1:{free_port()}", token=TOKEN, retry=FAST, kernel=kernel)
    with pytest.raises(aopkit.ReplyError) as caught:
        await remote("anyone?")
    error = caught.value.__cause__
    assert isinstance(error, RemoteAgentError) and error.retryable
    assert "cannot connect: ConnectError" in str(error)
    assert [e.attempt for e in retried] == [1, 2]
    fault = kernel.faults.faults[-1]
    assert (fault.kind, fault.tier, fault.calls) == ("accessibility", None, 2)


@pytest.fixture
async def flaky(kernel: aopkit.Kernel, serve: Any) -> AsyncIterator[tuple[str, list[int]]]:
    """A served echo whose first two requests get 503; the statuses it answered."""
    statuses: list[int] = []

    @web.middleware
    async def fail_twice(request: web.Request, handler: Any) -> web.StreamResponse:
        if len(statuses) < 2:
            statuses.append(503)
            return web.Response(status=503, text="<html>busy</html>")
        statuses.append(200)
        result: web.StreamResponse = await handler(request)
        return result

    app = build_app(Echo("echo", kernel=kernel), token=TOKEN, protocols=("a2a",))
    app.middlewares.insert(0, fail_twice)
    yield await serve(app), statuses


async def test_a_busy_server_is_retried_and_then_answers(kernel, flaky):
    url, statuses = flaky
    remote = A2AAgent(url, token=TOKEN, retry=FAST, kernel=kernel)
    assert (await remote("hello")).text == "#1 user: hello"
    assert statuses[:3] == [503, 503, 200]
    fault = kernel.faults.faults[-1]
    assert (fault.kind, fault.tier, fault.resolver, fault.calls) == ("accessibility", 1, "retry", 2)


async def test_a_wrong_token_is_not_retried_and_never_shown(kernel, serve):
    url = await serve(build_app(Echo("echo", kernel=kernel), token=TOKEN, protocols=("a2a",)))
    wrong = "wrong-token-9876543210"
    remote = A2AAgent(url, token=wrong, retry=FAST, kernel=kernel)
    with pytest.raises(aopkit.ReplyError) as caught:
        await remote("hello")
    error = caught.value.__cause__
    assert isinstance(error, RemoteAgentError) and error.status == 401 and not error.retryable
    assert "HTTP 401 (the token was refused)" in str(error)
    assert wrong not in str(caught.value) and TOKEN not in str(caught.value)


def test_bad_arguments_and_bad_state_are_clear_errors(kernel):
    with pytest.raises(aopkit.ConfigurationError, match="url must be an http"):
        A2AAgent("ftp://somewhere", kernel=kernel)
    remote = A2AAgent("http://127.0.0.1:1", kernel=kernel)
    state = {**remote.state_dict(), "context_id": 7}
    with pytest.raises(aopkit.DecodeError, match="context_id: expected a str or null"):
        remote.load_state_dict(state)
    assert remote.context_id is None


async def test_a_cancelled_reply_cancels_its_remote_task(kernel):
    # as `aopkit serve` runs it: aiohttp does not cancel the handler of a client that left
    app = build_app(Slow("slow", kernel=kernel), token=TOKEN, protocols=("a2a",))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        remote = A2AAgent(f"http://{host}:{port}", token=TOKEN, kernel=kernel)
        task = asyncio.ensure_future(remote("5"))
        while remote.context_id is None:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the remote turn ended too: the next one on the same context need not wait for it
        assert (await asyncio.wait_for(remote("0"), 3)).text == "slept 0"
    finally:
        await runner.cleanup()


def hostile(mode: str) -> web.Application:
    """An A2A server that answers every message badly, as ``mode`` says."""
    from a2a.types import a2a_pb2 as pb
    from google.protobuf.json_format import MessageToDict

    async def card(request: web.Request) -> web.Response:
        found = pb.AgentCard(
            name="hostile",
            version="1",
            capabilities=pb.AgentCapabilities(streaming=True),
            supported_interfaces=[
                pb.AgentInterface(
                    url=str(request.url.with_path("/a2a")),
                    protocol_binding="JSONRPC",
                    protocol_version="1.0",
                )
            ],
        )
        return web.json_response(MessageToDict(found))

    async def rpc(request: web.Request) -> web.StreamResponse:
        if mode == "html":
            return web.Response(
                text="<html><body>Bad gateway</body></html>", content_type="text/html"
            )
        if mode == "null":
            return web.json_response(None)
        if mode == "error":
            error = {"code": -32603, "message": "the remote broke"}
            return web.json_response({"jsonrpc": "2.0", "id": 1, "error": error})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        task = {"id": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_WORKING"}}
        await response.write(
            b'data: {"jsonrpc": "2.0", "id": 1, "result": {"task": %s}}\n\n'
            % json.dumps(task).encode()
        )
        await response.write(b'data: {"jsonrpc": "2.0", "id": 1, "res')  # and the line is cut
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/.well-known/agent-card.json", card)
    app.router.add_post("/a2a", rpc)
    return app


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("html", "A2A agent at http://"),
        ("null", "A2A agent at http://"),
        ("error", "the remote broke"),
        ("half", "the answer to task t1 broke off"),
    ],
)
async def test_a_hostile_server_gets_a_clear_error_and_no_repeat(kernel, serve, mode, says):
    url = await serve(hostile(mode))
    remote = A2AAgent(url, retry=FAST, kernel=kernel)
    with pytest.raises(aopkit.ReplyError) as caught:
        await remote("hello")
    error = caught.value.__cause__
    assert isinstance(error, RemoteAgentError), repr(error)
    assert says in str(error), str(error)
    assert not error.retryable


class Greeter(AgentExecutor):
    """An executor written against the sdk alone: asks for a name, then greets."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        from a2a.helpers.proto_helpers import new_task
        from a2a.types import a2a_pb2 as pb

        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        text = context.get_user_input()
        if context.current_task is None:
            submitted = pb.TaskState.TASK_STATE_SUBMITTED
            await event_queue.enqueue_event(
                new_task(context.task_id or "", context.context_id or "", submitted)
            )
            await updater.requires_input(updater.new_agent_message([pb.Part(text="Your name?")]))
            return
        await updater.add_artifact([pb.Part(text=f"Hello, {text}!")], name="greeting")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


async def test_a_server_built_on_the_sdk_alone(kernel):
    """A2AAgent against the sdk's own (Starlette) server, not aopkit's."""
    import uvicorn
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore
    from a2a.types import a2a_pb2 as pb
    from starlette.applications import Starlette

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    card = pb.AgentCard(
        name="greeter",
        version="1",
        capabilities=pb.AgentCapabilities(streaming=True),
        supported_interfaces=[
            pb.AgentInterface(url=url + "/rpc", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
    )
    handler = DefaultRequestHandler(Greeter(), InMemoryTaskStore(), card)
    app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/rpc")]
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.02)

        class Human:
            @aopkit.hookimpl
            def escalate(self, incident: Any) -> Resolution:
                assert incident.request == "Your name?"
                return Resolution("answer", "Ada")

        kernel.register(Human(), "human")
        remote = A2AAgent(url, name="greeter", kernel=kernel)
        reply = await remote("hi")
        assert reply.text == "Hello, Ada!"
        assert remote.context_id
    finally:
        server.should_exit = True
        await serving
        sock.close()
