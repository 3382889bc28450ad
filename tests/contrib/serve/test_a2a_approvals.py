"""Tool calls waiting for approval, answered by an a2a-sdk client (``input-required``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb
from aiohttp.test_utils import TestServer
from google.protobuf.json_format import MessageToDict

import aopkit
from aopkit import ReActAgent, Tool, ToolUseBlock
from aopkit_serve import build_app

from .test_a2a import AUTH, TOKEN, final, message, said
from .test_agui import TOKEN as AGUI_TOKEN
from .test_agui import events_of, run_input, well_formed

INPUT_REQUIRED = pb.TaskState.TASK_STATE_INPUT_REQUIRED


@pytest.fixture
async def a2a(kernel: aopkit.Kernel) -> AsyncIterator[Callable[..., Any]]:
    """``await a2a(target, streaming=..., durable=...)``: an sdk client of a new server
    (``a2a.servers`` are the servers, to stop one as a restart would)."""
    http = httpx.AsyncClient(headers=AUTH)
    servers: list[TestServer] = []

    async def connect(target: Any, *, streaming: bool = True, durable: Any = None) -> Any:
        app = build_app(target, token=TOKEN, kernel=kernel, durable=durable, protocols=("a2a",))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        url = str(server.make_url("")).rstrip("/")
        return await create_client(url, ClientConfig(httpx_client=http, streaming=streaming))

    connect.servers = servers  # type: ignore[attr-defined]
    yield connect
    for server in servers:
        await server.close()
    await http.aclose()


@pytest.fixture
def shop(kernel: aopkit.Kernel) -> Any:
    """A buyer whose ``buy`` needs approval; ``shop.bought`` is what it really bought."""
    model = kernel.model("scripted:buyer")
    bought: list[str] = []

    def buy(item: str, price: int = 0) -> str:
        """Buy something."""
        bought.append(item)
        return f"bought a {item}"

    def buyer(model: Any = model) -> ReActAgent:
        return ReActAgent("buyer", model, tools=[Tool(buy, approve=True)], kernel=kernel)

    buyer.model, buyer.bought = model, bought  # type: ignore[attr-defined]
    return buyer


async def paused(client: Any, shop: Any, context: str) -> pb.Task:
    shop.model.add([ToolUseBlock("c1", "buy", {"item": "boat", "price": 90})], "Done.")
    task, _ = await final(client, message("Buy a boat.", context))
    assert task.status.state == INPUT_REQUIRED
    return task


@pytest.mark.parametrize("streaming", [False, True])
async def test_the_pending_calls_are_shown_and_approve_runs_them(a2a, shop, streaming):
    client = await a2a(shop, streaming=streaming)
    task = await paused(client, shop, f"approve-{streaming}")
    assert 'buy({"item": "boat", "price": 90}) [c1]' in said(task)
    assert "Reply 'approve', 'reject: <reason>'" in said(task)
    data = MessageToDict(task.status.message.parts[1].data)
    assert data["approval"]["calls"] == [
        {"id": "c1", "tool": "buy", "arguments": {"item": "boat", "price": 90}}
    ]
    assert shop.bought == []
    done, _ = await final(client, message("Approve ", f"approve-{streaming}", task=task.id))
    assert done.status.state == pb.TaskState.TASK_STATE_COMPLETED
    assert said(done) == "Done." and shop.bought == ["boat"]


async def test_a_rejection_reason_is_the_tools_result(a2a, shop):
    client = await a2a(shop, streaming=False)
    task = await paused(client, shop, "reject")
    done, _ = await final(client, message("reject: boats sink", "reject", task=task.id))
    assert said(done) == "Done." and shop.bought == []
    seen = shop.model.calls[-1]["messages"][-1]
    assert "boats sink" in str(seen.content)


async def test_an_edit_runs_the_call_with_other_arguments(a2a, shop):
    client = await a2a(shop, streaming=True)
    task = await paused(client, shop, "edit")
    edit = '{"edit": {"c1": {"item": "canoe", "price": 20}}}'
    done, _ = await final(client, message(edit, "edit", task=task.id))
    assert said(done) == "Done." and shop.bought == ["canoe"]


@pytest.mark.parametrize(
    "garbage", ["maybe", "reject", "reject:  ", '{"edit": {"c9": {}}}', '{"edit": [1]}', "{"]
)
async def test_an_answer_outside_the_grammar_is_refused_and_asked_again(a2a, shop, garbage):
    client = await a2a(shop, streaming=False)
    task = await paused(client, shop, "garbage")
    again, _ = await final(client, message(garbage, "garbage", task=task.id))
    assert again.status.state == INPUT_REQUIRED
    assert "Reply 'approve', 'reject: <reason>'" in said(again)
    assert "[c1]" in said(again) and shop.bought == []
    done, _ = await final(client, message("approve", "garbage", task=again.id))
    assert said(done) == "Done." and shop.bought == ["boat"]


async def test_a_durable_run_paused_for_approval_is_answered_on_a_restarted_server(
    a2a, kernel, shop, tmp_path
):
    store = aopkit.JSONFileStore(tmp_path)

    async def server(buyer: Any) -> Any:
        return await a2a(buyer, durable=store)

    shop.model.add("Hello.")
    await final(await server(shop), message("Hi.", "kept"))  # an earlier turn, to replay
    await paused(await server(shop), shop, "kept")
    assert (await aopkit.pending_approval(store, "kept")).calls[0].tool == "buy"
    await a2a.servers[-1].close()  # the server stops: its waiting turn ends with it
    assert (await aopkit.pending_approval(store, "kept")).calls[0].tool == "buy", "kept"
    model = kernel.model("scripted:after", responses=["Done."])  # the new server's model
    restarted = await server(lambda: shop(model))
    again, _ = await final(restarted, message("maybe", "kept"))
    assert again.status.state == INPUT_REQUIRED  # refused, and asked again
    assert "not an answer to the approval: 'maybe'" in said(again) and "[c1]" in said(again)
    done, _ = await final(restarted, message("reject: too dear", "kept", task=again.id))
    assert said(done) == "Done." and shop.bought == []
    assert await aopkit.pending_approval(store, "kept") is None
    (call,) = model.calls  # the earlier answers came from the journal; memory was rebuilt
    texts = [str(m.content) for m in call["messages"]]
    assert len(texts) == 5 and texts[0] == "Hi." and "Hello." in texts[1]  # nothing doubled
    assert texts[2] == "Buy a boat." and "rejected by a person: too dear" in texts[4]


async def test_ag_ui_says_the_run_waits_for_approval(kernel, serve, shop):
    url = await serve(build_app(shop, token=AGUI_TOKEN, kernel=kernel, protocols=("agui",)))
    shop.model.add([ToolUseBlock("c1", "buy", {"item": "boat"})])
    events = await events_of(url, run_input("Buy a boat."))
    well_formed(events)
    custom = [e for e in events if e.type == "CUSTOM"]
    assert custom[-1].name == "aopkit.approval_requested"
    assert custom[-1].value["calls"] == [{"id": "c1", "tool": "buy", "arguments": {"item": "boat"}}]
    assert events[-1].type == "RUN_ERROR" and events[-1].code == "AwaitingApproval"
    assert "waits for approval" in events[-1].message and shop.bought == []
