"""build_app: the token on every route, protocols loaded by name."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict

import aopkit
import aopkit_serve
from aopkit_serve import SERVICE, Service, build_app

from .agents import Recall

TOKEN = "s3cret-token-for-tests"


async def test_every_route_needs_the_token_and_it_is_never_echoed(kernel, serve):
    app = build_app(Recall("a", kernel=kernel), token=TOKEN, protocols=())
    assert isinstance(app[SERVICE], Service)
    assert TOKEN not in kernel.secrets.redact(f"logged: {TOKEN}")  # scrubbed like an API key

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="in")

    app.router.add_get("/hello", hello)
    url = await serve(app)
    wrong = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer{TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN[:-1]}é"},
    ]
    async with aiohttp.ClientSession() as http:
        for headers in wrong:
            for path in ("/hello", "/nowhere"):
                async with http.get(url + path, headers=headers) as response:
                    assert response.status == 401, headers
                    assert TOKEN not in await response.text()
                    assert (await response.json())["error"]["code"] == "invalid_api_key"
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
        for right in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}"):  # RFC 7235
            async with http.get(url + "/hello", headers={"Authorization": right}) as ok:
                assert ok.status == 200 and await ok.text() == "in"
        for path in ("/hello", "/HELLO", "/hello/", "//hello", "/nowhere"):
            for method in ("GET", "HEAD", "OPTIONS", "DELETE", "POST"):
                async with http.request(method, url + path) as response:
                    assert response.status == 401, (method, path)


async def test_every_route_of_every_protocol_needs_the_token(kernel, serve):
    """Each route the protocols register (the A2A card, MCP's GET and DELETE included), with
    every method, in odd case and with a trailing slash: 401 before any handler runs."""
    app = build_app(Recall("a", kernel=kernel), token=TOKEN)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/.well-known/agent-card.json", "/mcp", "/a2a", "/ag-ui"} <= paths
    url = await serve(app)
    async with aiohttp.ClientSession() as http:
        for path in sorted(paths):
            for variant in (path, path.upper(), path + "/", f"{path}?token={TOKEN}"):
                for method in ("GET", "HEAD", "OPTIONS", "POST", "DELETE"):
                    headers = {"Authorization": f"Bearer {TOKEN}x"}
                    async with http.request(method, url + variant, headers=headers) as response:
                        assert response.status == 401, (method, variant)


async def test_two_authorization_headers_are_refused(kernel, serve):
    """Which of two headers a proxy or framework reads differs: neither is trusted."""
    app = build_app(Recall("a", kernel=kernel), token=TOKEN, protocols=())

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="in")

    app.router.add_get("/hello", hello)
    url = await serve(app)
    async with aiohttp.ClientSession() as http:
        for pair in ([TOKEN, "wrong"], ["wrong", TOKEN], [TOKEN, TOKEN]):
            headers = MultiDict(("Authorization", f"Bearer {value}") for value in pair)
            async with http.get(url + "/hello", headers=headers) as response:
                assert response.status == 401, pair


def test_a_token_is_required(kernel):
    for token in ("", "  ", None, f" {TOKEN}", f"{TOKEN}\n"):
        with pytest.raises(aopkit.ConfigurationError, match="token"):
            build_app(Recall("a", kernel=kernel), token=token, protocols=())  # type: ignore[arg-type]


def test_unknown_and_uninstalled_protocols_are_clear_errors(kernel, monkeypatch):
    agent = Recall("a", kernel=kernel)
    with pytest.raises(aopkit.ConfigurationError, match="unknown protocol 'soap'; choose from"):
        build_app(agent, token=TOKEN, protocols=("soap",))

    def missing(name: str) -> object:
        raise ModuleNotFoundError(f"No module named {'a2a'!r}", name="a2a")

    monkeypatch.setattr(aopkit_serve._app.importlib, "import_module", missing)
    with pytest.raises(aopkit.AopkitError, match=r"needs the package 'a2a'.*aopkit\[serve\]"):
        build_app(agent, token=TOKEN, protocols=("a2a",))


async def test_mounted_in_a_host_app_the_token_still_guards_it(kernel, serve):
    host = web.Application()
    host.add_subapp("/agents/", build_app(Recall("a", kernel=kernel), token=TOKEN, protocols=()))
    url = await serve(host)
    async with aiohttp.ClientSession() as http, http.get(url + "/agents/x") as response:
        assert response.status == 401


async def test_one_conversation_through_three_protocols_at_once_takes_turns(kernel, serve):
    """OpenAI, AG-UI and A2A turns on one conversation wait for each other: each reply sees
    the turns before it, and the memory ends with every message once, in order."""
    url = await serve(build_app(Recall("recall", kernel=kernel), token=TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Aopkit-Conversation": "c1"}

    async with aiohttp.ClientSession(headers=headers) as http:

        async def openai(text: str) -> str:
            body = {"model": "recall", "messages": [{"role": "user", "content": text}]}
            async with http.post(url + "/v1/chat/completions", json=body) as response:
                return str((await response.json())["choices"][0]["message"]["content"])

        async def agui(text: str) -> str:
            message = {"id": "m1", "role": "user", "content": text}
            body = {"threadId": "c1", "runId": "r1", "messages": [message], "state": None}
            body |= {"tools": [], "context": [], "forwardedProps": None}
            async with http.post(url + "/ag-ui", json=body) as response:
                return await response.text()

        async def a2a(text: str) -> str:
            message = {"messageId": "m9", "contextId": "c1", "role": "ROLE_USER"}
            message["parts"] = [{"text": text}]
            rpc = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {"message": message},
            }
            async with http.post(
                url + "/a2a", json=rpc, headers={"A2A-Version": "1.0"}
            ) as response:
                return await response.text()

        first = asyncio.create_task(openai("sleep:0.3"))
        await asyncio.sleep(0.1)  # the first turn holds the conversation
        streamed, answered = await asyncio.gather(agui("two"), a2a("three"))
        assert await first == "sleep:0.3"
        assert '"result":"sleep:0.3|' in streamed
        assert '"text": "sleep:0.3|' in answered
        assert await openai("last") in ("sleep:0.3|two|three|last", "sleep:0.3|three|two|last")


async def test_served_agents_fetch_media_from_public_hosts_only(kernel):
    """A client's image URL must not make the server fetch from its own network: every
    served agent's kernel, per-conversation ones too, fetches media from public hosts only,
    unless the app allows private ones."""
    other = aopkit.Kernel(environ={})
    try:
        build_app(lambda: [Recall("a", kernel=other)], token=TOKEN, protocols=())
        assert other.pool.public_media_only
        other.pool.public_media_only = False
        app = build_app(lambda: [Recall("a", kernel=other)], token=TOKEN, protocols=())
        other.pool.public_media_only = False
        async with app[SERVICE].conversation(None):  # a conversation's fresh agents
            assert other.pool.public_media_only
        build_app(Recall("b", kernel=kernel), token=TOKEN, protocols=(), private_media=True)
        assert not kernel.pool.public_media_only
    finally:
        await other.aclose()
