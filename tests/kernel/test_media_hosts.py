"""Media fetches limited to public hosts (``HTTPPool.public_media_only``, which ``aopkit serve``
sets): a client of a served agent must not make the server fetch from its own network, by an
address, a name, or a redirect."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from aopkit import http
from aopkit.formatting import MediaError

PNG = b"\x89PNG\r\n\x1a\n fake"


async def media_server(serve, seen: list[str]) -> str:
    async def image(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=PNG, content_type="image/png")

    async def moved(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/cat.png", image)
    app.router.add_get("/moved", moved)
    app.router.add_get("/loop", loop)
    return await serve(app)


async def test_without_the_limit_a_redirect_chain_is_followed(kernel, serve):
    seen: list[str] = []
    base = await media_server(serve, seen)
    hops = f"{base}/moved?to=/moved%3Fto%3D/cat.png"
    assert await kernel.pool.fetch(hops, 1000) == (PNG, "image/png")
    assert seen == ["/moved", "/moved", "/cat.png"]


async def test_endless_redirects_end(kernel, serve):
    seen: list[str] = []
    base = await media_server(serve, seen)
    with pytest.raises(MediaError, match="redirected more than 10 times"):
        await kernel.pool.fetch(f"{base}/loop", 1000)


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "127.0.0.1 is not a public address"),
        ("localhost", "localhost is not a public address"),  # by the resolver
        ("0x7f000001", "0x7f000001 is not a public address"),  # read as an address
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is not a public address"),
        # aiohttp 3.10 connects to this one without resolving it (a newer yarl refuses it)
        ("127.1", "127.1 is not a public address"),
        ("2130706433", "2130706433 is not a public address"),
    ],
)
async def test_loopback_by_address_or_name_is_refused_before_any_request(kernel, serve, host, why):
    seen: list[str] = []
    base = await media_server(serve, seen)
    port = base.rsplit(":", 1)[1]
    kernel.pool.public_media_only = True
    with pytest.raises(MediaError, match=re.escape(why)):
        await kernel.pool.fetch(f"http://{host}:{port}/cat.png", 1000)
    assert seen == []


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "fd00::1", "100.64.0.1", "0.0.0.0"],
)
async def test_private_and_reserved_addresses_are_not_public(address):
    import ipaddress

    assert not http._public(ipaddress.ip_address(address))
    assert http._public(ipaddress.ip_address("93.184.215.14"))


async def test_a_redirect_into_the_network_is_refused(kernel, serve, monkeypatch):
    """The first host passes (here: 127.0.0.1, counted as public for the test); the redirect
    to another loopback address does not, and is never requested."""
    seen: list[str] = []
    base = await media_server(serve, seen)
    port = base.rsplit(":", 1)[1]
    real = http._public
    monkeypatch.setattr(http, "_public", lambda a: str(a) == "127.0.0.1" or real(a))
    kernel.pool.public_media_only = True
    inside = f"http://127.0.0.2:{port}/cat.png"
    with pytest.raises(MediaError, match=r"127\.0\.0\.2 is not a public address"):
        await kernel.pool.fetch(f"{base}/moved?to={inside}", 1000)
    assert seen == ["/moved"]
