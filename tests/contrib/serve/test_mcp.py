"""MCP at /mcp, driven by the ``mcp`` package's own streamable-HTTP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import aopkit
from aopkit_serve import build_app

from .agents import Recall

PROTOCOLS = ("mcp",)
TOKEN = "mcp-test-token-0123456789"
SECRET = "sk-never-show-this-0000"


class Broken(aopkit.Agent):
    """Fails with a secret in its error."""

    description = "Always fails."

    async def reply(self, msg: Any) -> aopkit.Msg:
        raise RuntimeError(f"upstream refused key {SECRET}")


def _toolkit(kernel: aopkit.Kernel) -> aopkit.Toolkit:
    toolkit = aopkit.Toolkit(kernel=kernel)

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def explode(why: str) -> str:
        """Always raises."""
        raise ValueError(f"{why} with {SECRET}")

    toolkit.add(add)
    toolkit.add(explode)
    return toolkit


@pytest.fixture
async def url(kernel, serve) -> str:
    kernel.secrets.add(SECRET)
    agents = [Recall("recall", kernel=kernel), Broken("broken", kernel=kernel)]
    app = build_app(agents, token=TOKEN, toolkits=[_toolkit(kernel)], protocols=("mcp",))
    return f"{await serve(app)}/mcp"


@asynccontextmanager
async def session(url: str, token: str = TOKEN) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


def _text(result: Any) -> str:
    return "".join(part.text for part in result.content)


async def test_lists_agents_and_toolkit_tools(url):
    async with session(url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert list(tools) == ["recall", "broken", "add", "explode"]
    assert tools["recall"].description == "Recalls what you said."
    assert tools["recall"].input_schema["required"] == ["message"]
    assert set(tools["recall"].input_schema["properties"]) == {"message", "conversation"}
    assert tools["add"].description == "Add two integers."
    assert tools["add"].input_schema["properties"]["a"]["type"] == "integer"


async def test_an_agent_remembers_its_session_and_a_named_conversation(url):
    async with session(url) as client:
        first = await client.call_tool("recall", {"message": "one"})
        second = await client.call_tool("recall", {"message": "two"})
        named = await client.call_tool("recall", {"message": "x", "conversation": "c1"})
    assert not first.is_error and _text(first) == "one"
    assert _text(second) == "one|two"  # the MCP session is the conversation
    assert second.structured_content["conversation"] == first.structured_content["conversation"]
    assert named.structured_content == {"reply": "x", "conversation": "c1"}
    async with session(url) as other:  # a new session starts afresh; a named one continues
        assert _text(await other.call_tool("recall", {"message": "three"})) == "three"
        again = await other.call_tool("recall", {"message": "y", "conversation": "c1"})
        assert _text(again) == "x|y"


async def test_toolkit_tools_run_and_errors_are_error_results_without_secrets(url):
    async with session(url) as client:
        added = await client.call_tool("add", {"a": 2, "b": 3})
        exploded = await client.call_tool("explode", {"why": "boom"})
        invalid = await client.call_tool("add", {"a": "two"})
        broken = await client.call_tool("broken", {"message": "hi"})
        wrong = await client.call_tool("recall", {"message": 5})
        with pytest.raises(MCPError, match="unknown tool 'nope'"):
            await client.call_tool("nope", {})
    assert not added.is_error and _text(added) == "5"
    for result in (exploded, invalid, broken, wrong):
        assert result.is_error
        assert SECRET not in _text(result) and "Traceback" not in _text(result)
    assert "boom" in _text(exploded) and "invalid arguments" in _text(invalid)
    assert "RuntimeError" in _text(broken) and "message" in _text(wrong)


async def test_concurrent_sessions_never_share_a_conversation(url):
    async def talk(n: int) -> list[str]:
        async with session(url) as client:
            return [
                _text(await client.call_tool("recall", {"message": f"{n}-{i}"})) for i in range(3)
            ]

    answers = await asyncio.gather(*(talk(n) for n in range(6)))
    for n, said in enumerate(answers):
        assert said == [f"{n}-0", f"{n}-0|{n}-1", f"{n}-0|{n}-1|{n}-2"]


async def test_a_wrong_token_is_refused_and_garbage_is_a_parse_error(url):
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.post(url, headers=headers, json={}) as response:
                assert response.status == 401 and TOKEN not in await response.text()
        garbage = {
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        async with http.post(url, headers=garbage, data=b"{half") as response:
            assert response.status == 400  # the SDK's own JSON-RPC parse error
            assert json.loads(await response.text())["error"]["code"] == -32700
    with pytest.raises(Exception) as refused:  # the SDK's own error, by version
        async with session(url, token="wrong"):
            pass
    assert TOKEN not in str(refused.value)


async def test_a_new_server_on_the_store_continues_a_named_conversation(kernel, serve, tmp_path):
    async def server() -> str:
        store = aopkit.SQLiteStore(tmp_path / "sessions.sqlite3")
        agent = Recall("recall", kernel=kernel)
        app = build_app(agent, token=TOKEN, store=store, protocols=PROTOCOLS)
        return f"{await serve(app)}/mcp"

    async with session(await server()) as client:
        await client.call_tool("recall", {"message": "before", "conversation": "kept"})
    async with session(await server()) as client:
        again = await client.call_tool("recall", {"message": "after", "conversation": "kept"})
        hostile = await client.call_tool("recall", {"message": "x", "conversation": "../../etc"})
    assert _text(again) == "before|after"
    assert hostile.is_error and "conversation id" in _text(hostile)
