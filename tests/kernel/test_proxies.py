"""Model calls through HTTP proxies: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` /
``NO_PROXY`` from the kernel's environment, against tinyproxy (a real proxy, from Debian's
packages) and against proxies that answer wrongly on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import aopkit
from aopkit import wire
from aopkit.http import Request
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.proxies import _Bypass, proxies_of

from . import test_wire
from .test_wire import Raw, answer

raw, certificate = test_wire.raw, test_wire.certificate  # the wire tests' fixtures

PASSWORD = "pr0xy-DO-NOT-LEAK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tinyproxy:
    """tinyproxy on a loopback port, its log read by the tests."""

    def __init__(self, tmp_path: Path, *, auth: bool = False) -> None:
        self.port, self.log = free_port(), tmp_path / "tinyproxy.log"
        conf = tmp_path / "tinyproxy.conf"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 30",
            "MaxClients 50",
            "LogLevel Info",
            f'LogFile "{self.log}"',
            "DisableViaHeader Yes",
        ]
        if auth:
            lines.append(f"BasicAuth agent {PASSWORD}")
        conf.write_text("\n".join(lines) + "\n")
        binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
        self.process = subprocess.Popen(
            [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    why = self.process.stderr.read()
                    raise RuntimeError(f"tinyproxy did not start: {why!r}") from None
                time.sleep(0.05)

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}"

    def logged(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        self.process.stderr.close()


@pytest.fixture
def tinyproxy(tmp_path):
    if shutil.which("tinyproxy") is None and not Path("/usr/bin/tinyproxy").exists():
        pytest.skip("tinyproxy is not installed (sh scripts/install-debian.sh tinyproxy=tinyproxy)")
    started: list[Tinyproxy] = []

    def start(**options):
        found = Tinyproxy(tmp_path / f"p{len(started)}", **options)
        started.append(found)
        return found

    for n in range(3):
        (tmp_path / f"p{n}").mkdir()
    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
async def tls_server(certificate, monkeypatch):
    """An https server with a self-signed certificate the wire is told to trust."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    wire._tls.cache_clear()
    servers: list[Raw] = []

    async def start(script):
        server = Raw(script)
        servers.append(server)
        base = await server.start(tls=context)
        return server, base.replace("http://", "https://")

    yield start
    wire._tls.cache_clear()
    for server in servers:
        await server.stop()


def call(kernel: aopkit.Kernel, url: str) -> Request:
    return Request("p:m", kernel.pool, url, {"q": 1}, secrets=kernel.secrets, timeout=10)


async def test_an_https_call_goes_through_a_tunnel_the_proxy_opens(tinyproxy, tls_server):
    proxy = tinyproxy()
    server, base = await tls_server(lambda n: [answer(b'{"n": %d}' % n)])
    async with aopkit.Kernel(environ={"HTTPS_PROXY": proxy.url()}) as kernel:
        for n in (1, 2, 3):
            assert await call(kernel, f"{base}/v1/chat").send() == {"n": n}
    assert server.connections == 1, "the tunnel is kept for the next call"
    head, _ = server.requests[0]
    assert head.startswith(b"POST /v1/chat HTTP/1.1\r\n"), "inside the tunnel: the server's form"
    assert f"CONNECT 127.0.0.1:{base.rsplit(':', 1)[1]}" in proxy.logged()


async def test_an_http_call_is_sent_to_the_proxy_whole(tinyproxy, raw):
    proxy = tinyproxy()
    server, base = await raw(lambda n: [answer(b'{"plain": true}')])
    async with aopkit.Kernel(environ={"http_proxy": proxy.url()}) as kernel:
        assert await call(kernel, f"{base}/v1/chat?x=1").send() == {"plain": True}
    assert f"POST {base}/v1/chat?x=1" in proxy.logged()
    assert server.requests[0][0].startswith(b"POST /v1/chat?x=1 HTTP/1.")


@pytest.mark.parametrize("tls", [True, False])
async def test_a_proxy_that_wants_credentials_gets_those_of_its_url_and_no_one_sees_them(
    tinyproxy, tls_server, raw, tls
):
    proxy = tinyproxy(auth=True)
    script = lambda n: [answer(b'{"through": true}')]  # noqa: E731
    server, base = await (tls_server(script) if tls else raw(script))
    variable = "HTTPS_PROXY" if tls else "HTTP_PROXY"
    async with aopkit.Kernel(environ={variable: proxy.url()}) as kernel:
        with pytest.raises(ModelRejected, match="407") as info:
            await call(kernel, base).send()
        if tls:
            assert "wants credentials: give them in its URL" in str(info.value)
    async with aopkit.Kernel(environ={variable: proxy.url(f"agent:{PASSWORD}@")}) as kernel:
        assert PASSWORD not in kernel.secrets.redact(f"x {PASSWORD} y"), "a secret of the kernel"
        assert await call(kernel, base).send() == {"through": True}
    async with aopkit.Kernel(environ={variable: proxy.url("agent:wrong@")}) as kernel:
        with pytest.raises(ModelRejected, match=r"40[17]") as info:
            await call(kernel, base).send()
    assert "wrong" not in str(info.value) and PASSWORD not in str(info.value)
    head = server.requests[0][0]
    assert b"Proxy-Authorization" not in head, "the credentials are the proxy's alone"


async def test_no_proxy_names_what_is_called_directly(raw):
    closed = free_port()  # a proxy that is not there
    _, base = await raw(lambda n: [answer()])
    environ = {"HTTP_PROXY": f"127.0.0.1:{closed}"}
    async with aopkit.Kernel(environ=environ) as kernel:
        with pytest.raises(ModelUnavailable, match=rf"through the proxy 127\.0\.0\.1:{closed}"):
            await call(kernel, base).send()
    for bypass in ("127.0.0.1", "*", "localhost,127.0.0.0/8", f"127.0.0.1:{base.rsplit(':')[-1]}"):
        async with aopkit.Kernel(environ={**environ, "no_proxy": bypass}) as kernel:
            assert await call(kernel, base).send() == {"ok": True}, bypass


class FakeProxy:
    """A proxy that answers CONNECT with ``reply``, then closes the connection or waits until
    the client lets it go (``let_go`` is set then)."""

    def __init__(self, reply: bytes, *, close: bool) -> None:
        self.reply, self.close, self.writers = reply, close, []
        self.let_go = asyncio.Event()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader, writer) -> None:
        self.writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.reply)
        await writer.drain()
        if self.close:
            writer.close()
            return
        with contextlib.suppress(OSError):
            await reader.read()  # until the client closes its end
        self.let_go.set()

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (b"", ModelUnavailable, "closed the connection, no tunnel made"),
        (b"<html>hello</html>\r\n\r\n", ModelUnavailable, "answered CONNECT with no HTTP"),
        (b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01", ModelUnavailable, "sent bytes before TLS"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", ModelRejected, "made no tunnel to .*403 Forbidden"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", ModelUnavailable, "502 Bad Gateway"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, ModelUnavailable, "no end of head"),
    ],
)
async def test_a_proxy_that_answers_connect_wrongly_fails_the_call_clearly(reply, error, match):
    proxy = FakeProxy(reply, close=not reply.endswith(b"y"))
    async with proxy as url, aopkit.Kernel(environ={"ALL_PROXY": url}) as kernel:
        with pytest.raises(error, match=match):
            await call(kernel, "https://model.example/v1").send()


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, "HTTPS_PROXY names a socks5:// proxy"),
        ({"https_proxy": "https://proxy.example"}, "https_proxy names a https:// proxy"),
        ({"ALL_PROXY": "http://[::1"}, "ALL_PROXY is not a proxy URL"),
    ],
)
async def test_a_proxy_url_aopkit_cannot_use_is_named_at_the_call(environ, match):
    async with aopkit.Kernel(environ=environ) as kernel:
        with pytest.raises(ModelRejected, match=match):
            await call(kernel, "https://model.example/v1").send()


def test_which_variables_are_read():
    assert proxies_of({}) is None and proxies_of({"NO_PROXY": "*"}) is None
    both = proxies_of({"HTTP_PROXY": "http://upper:1", "http_proxy": "lower:2"})
    assert both.http.shown == "lower:2", "the lower-case name first, as curl reads them"
    assert both.https is None
    fallback = proxies_of({"ALL_PROXY": "all:3", "HTTPS_PROXY": "tls:4"})
    assert (fallback.http.shown, fallback.https.shown) == ("all:3", "tls:4")
    cgi = proxies_of({"HTTP_PROXY": "http://attacker:8", "REQUEST_METHOD": "GET"})
    assert cgi is None, "in a CGI script HTTP_PROXY is a client's Proxy: header (httpoxy)"
    assert proxies_of({"http_proxy": "ok:9", "REQUEST_METHOD": "GET"}).http.shown == "ok:9"


@pytest.mark.parametrize(
    ("entry", "host", "port", "bypassed"),
    [
        ("*", "api.example.com", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("example.com:8080", "example.com", 443, False),
        ("example.com:8080", "example.com", 8080, True),
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("10.0.0.0/8", "ten.example", 80, False),
        ("::1", "::1", 80, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 80, False),
        ("EXAMPLE.com", "Api.Example.COM", 443, True),
    ],
)
def test_no_proxy_entries(entry, host, port, bypassed):
    assert _Bypass.of(entry).matches(host, port) is bypassed


async def test_a_provider_calls_through_the_tunnel_and_only_the_server_sees_its_key(
    tinyproxy, tls_server
):
    proxy = tinyproxy()
    completion = {
        "id": "c1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello through"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    server, base = await tls_server(lambda n: [answer(json.dumps(completion).encode())])
    async with aopkit.Kernel(environ={"HTTPS_PROXY": proxy.url()}) as kernel:
        model = kernel.model("openai:m", base_url=f"{base}/v1", api_key="sk-tunnelled")
        assert (await model("hi")).text == "hello through"
    head, _ = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions ")
    assert b"Bearer sk-tunnelled" in head
    assert "sk-tunnelled" not in proxy.logged() and "chat/completions" not in proxy.logged()


def test_a_proxy_shows_no_credentials_in_its_repr():
    found = proxies_of({"HTTPS_PROXY": f"http://agent:{PASSWORD}@proxy.example:3128"})
    routed = found.route(wire.target("https://api.example/v1"))
    assert PASSWORD not in repr(found.https) and PASSWORD not in repr(routed)
    assert "proxy.example:3128" in repr(routed)


async def test_a_proxy_that_never_answers_connect_fails_within_the_timeout_and_keeps_nothing():
    """The proxy takes the CONNECT and is silent: the call fails when its time is up, naming
    the wait, the socket is closed (the proxy sees it go), and no connection stays counted."""
    proxy = FakeProxy(b"", close=False)
    async with proxy as url, aopkit.Kernel(environ={"ALL_PROXY": url}) as kernel:
        request = Request("p:m", kernel.pool, "https://model.example/v1", {"q": 1}, timeout=0.3)
        with pytest.raises(ModelUnavailable, match=r"no answer within 0\.3 s \(connecting\)"):
            await request.send()
        await asyncio.wait_for(proxy.let_go.wait(), 2)
        assert len(proxy.writers) == 1 and kernel.pool.wire().open_connections == 0
