"""The wire model calls travel on (``aopkit.wire``), against a loopback server that writes
exactly the bytes each test gives it: answers cut short, garbled, compressed, early, late or
out of turn; connections the server drops while idle; requests cancelled midway. Every
failure is a model error that says what happened, and no connection left in the middle of an
answer is ever used again."""

from __future__ import annotations

import asyncio
import gc
import gzip
import re
import ssl
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import aopkit
from aopkit import wire
from aopkit.http import Request
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.secret import Secret

CLOSE = object()  # in an answer's parts: close the connection there


def answer(body: bytes = b'{"ok": true}', *, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def chunked(*chunks: bytes, end: bool = True) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + body + (b"0\r\n\r\n" if end else b"")


Parts = Sequence[Any]  # bytes to write, seconds to wait, CLOSE


class Raw:
    """A loopback server: request ``n`` (from 1, over all connections) is answered with the
    parts ``script(n)`` gives. It records every request and counts connections."""

    def __init__(self, script: Callable[[int], Parts]) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.open = 0  # connections not yet closed
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"\r\nContent-Length: (\d+)", head)
                body = await reader.readexactly(int(length[1])) if length else b""
                self.requests.append((head, body))
                for part in self.script(len(self.requests)):
                    if part is CLOSE:
                        return
                    if isinstance(part, (int, float)):
                        await asyncio.sleep(part)
                    else:
                        writer.write(part)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()  # its handler sees the connection end, and returns
        await asyncio.sleep(0)


@pytest.fixture
async def raw():
    servers: list[Raw] = []

    async def start(script: Callable[[int], Parts]) -> tuple[Raw, str]:
        server = Raw(script)
        servers.append(server)
        return server, await server.start()

    yield start
    for server in servers:
        await server.stop()


def call(kernel, url: str, **options: Any) -> Request:
    return Request("p:m", kernel.pool, url, {"q": 1}, secrets=kernel.secrets, **options)


async def lines(request: Request) -> list[bytes]:
    return [line async for line in request.lines()]


async def test_one_connection_carries_request_after_request(kernel, raw):
    server, base = await raw(lambda n: [answer(b'{"n": %d}' % n)])
    for n in range(1, 6):
        assert await call(kernel, f"{base}/v1/x").send() == {"n": n}
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert body == b'{"q":1}'


async def test_a_connection_the_server_dropped_while_idle_is_not_reused(kernel, raw):
    server, base = await raw(lambda n: [answer(), CLOSE])  # says keep-alive, then hangs up
    for _ in range(3):
        assert await call(kernel, base).send() == {"ok": True}
        await asyncio.sleep(0.05)
    assert server.connections == 3 and len(server.requests) == 3


async def test_a_reused_connection_closed_as_the_request_went_is_retried_once(kernel, raw):
    """The race every keep-alive client meets: the server closes an idle connection just as
    a request is written to it. Nothing of an answer came, so the request goes again, on a
    new connection, once."""
    server, base = await raw(lambda n: [CLOSE] if n == 2 else [answer(b'{"n": %d}' % n)])
    assert await call(kernel, base).send() == {"n": 1}
    assert await call(kernel, base).send() == {"n": 3}
    assert server.connections == 2


async def test_a_new_connection_closed_before_an_answer_is_not_retried(kernel, raw):
    server, base = await raw(lambda n: [CLOSE])
    with pytest.raises(ModelUnavailable, match="connection failed: the server closed"):
        await call(kernel, base).send()
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        ([b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"half": ', CLOSE], "cut off"),
        ([b"SSH-2.0-OpenSSH_9.6\r\n"], "not valid HTTP"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"], "not valid HTTP"),
        ([b"\x00\xff" * 20], "not valid HTTP"),
        ([b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"], "'br'"),
        (
            [b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"],
            "compressed body is corrupt",
        ),
        (
            [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"],
            "protocol",
        ),
    ],
)
async def test_broken_answers_are_retryable_errors_that_say_what_broke(kernel, raw, parts, words):
    _, base = await raw(lambda n: parts)
    with pytest.raises(ModelUnavailable, match=words):
        await call(kernel, base, timeout=2).send()


async def test_an_html_page_is_named_as_one(kernel, raw):
    page = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"
    head = f"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {len(page)}"
    _, base = await raw(lambda n: [head.encode() + b"\r\n\r\n" + page])
    with pytest.raises(ModelUnavailable, match="HTML page instead of JSON") as info:
        await call(kernel, base).send()
    assert info.value.status == 502


async def test_answers_framed_every_way_http_allows_are_read_whole(kernel, raw):
    body = b'{"text": "' + b"x" * 70_000 + b'"}'
    squeezed = gzip.compress(body)
    ways = [
        answer(body),
        chunked(body[:10], body[10:50_000], body[50_000:]),
        answer(squeezed, extra="Content-Encoding: gzip\r\n"),
        # An interim answer first, then the real one.
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(body),
    ]
    _, base = await raw(lambda n: [ways[n - 1]])
    for _ in ways:
        assert (await call(kernel, base).send())["text"] == "x" * 70_000
    # A body with neither length nor chunks ends when the server closes the connection.
    _, closing = await raw(lambda n: [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", body, CLOSE])
    assert (await call(kernel, closing).send())["text"] == "x" * 70_000


async def test_an_answer_sent_in_single_bytes_is_read(kernel, raw):
    whole = chunked(b"data: 1\n\n", b"data: 2\n\n")
    _, base = await raw(lambda n: [whole[i : i + 1] for i in range(len(whole))])
    assert await lines(call(kernel, base)) == [b"data: 1\n", b"\n", b"data: 2\n", b"\n"]


async def test_a_stream_cut_midway_yields_what_came_then_fails(kernel, raw):
    _, base = await raw(lambda n: [chunked(b"data: 1\n\n", b"data: 2", end=False), CLOSE])
    got: list[bytes] = []
    with pytest.raises(ModelUnavailable, match="cut off"):
        async for line in call(kernel, base).lines():
            got.append(line)
    assert got == [b"data: 1\n", b"\n"]


async def test_a_stream_left_midway_closes_its_connection(kernel, raw):
    """The next request must not read the rest of the old answer as its own."""
    stream = [chunked(b"data: 1\n\n", b"data: 2\n\n", end=False), 0.2, b"0\r\n\r\n"]
    server, base = await raw(lambda n: stream if n == 1 else [answer(b'{"n": 2}')])
    request = call(kernel, base).lines()
    assert await request.__anext__() == b"data: 1\n"
    await request.aclose()
    assert await call(kernel, base).send() == {"n": 2}
    assert server.connections == 2


async def test_a_large_stream_read_slowly_arrives_whole(kernel, raw):
    """The server is not read further ahead of a slow reader than the buffer allows; what
    waits in it is every line, in order."""
    many = [b"data: %d %s\n\n" % (i, b"y" * 1000) for i in range(3000)]  # 3 MB
    _, base = await raw(lambda n: [chunked(*many)])
    seen, most, connection = 0, 0, None
    async for line in call(kernel, base, timeout=5).lines():
        if line != b"\n":
            assert line.startswith(b"data: %d " % seen)
            seen += 1
            if seen % 500 == 0:
                await asyncio.sleep(0.05)  # the server fills the buffer meanwhile
        connection = connection or next(c for c in _connections(kernel) if c.active)
        most = max(most, len(connection.body))
    assert seen == 3000
    assert wire.STREAM_BUFFER // 2 < most <= wire.STREAM_BUFFER + 300_000  # a read past the mark


def _connections(kernel) -> list[wire.Connection]:
    """The kernel's connections, idle or in use."""
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, wire.Connection) and o.wire is kernel.pool.wire()
    ]


async def test_a_server_that_stops_midway_times_out(kernel, raw):
    _, base = await raw(lambda n: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{", 5])
    with pytest.raises(ModelUnavailable, match=r"no answer within 0\.2 s"):
        await call(kernel, base, timeout=0.2).send()


async def test_a_stream_read_slowly_is_not_timed_out_by_its_reader(kernel, raw):
    _, base = await raw(lambda n: [chunked(*[b"data: %d\n\n" % i for i in range(5)])])
    got = []
    async for line in call(kernel, base, timeout=0.2).lines():
        got.append(line)
        await asyncio.sleep(0.1)  # the reader takes 1 s in all; the server was quick
    assert len(got) == 10


async def test_bytes_after_the_answer_mean_the_connection_is_not_reused(kernel, raw):
    server, base = await raw(
        lambda n: [answer() + b"HTTP/1.1 200 OK\r\n"] if n == 1 else [answer()]
    )
    assert await call(kernel, base).send() == {"ok": True}
    await asyncio.sleep(0.05)
    assert await call(kernel, base).send() == {"ok": True}
    assert server.connections == 2


async def test_connection_close_is_honoured(kernel, raw):
    server, base = await raw(lambda n: [answer(extra="Connection: close\r\n")])
    for _ in range(2):
        assert await call(kernel, base).send() == {"ok": True}
    assert server.connections == 2


@pytest.mark.parametrize("where", ["headers", "body", "stream"])
async def test_a_request_cancelled_at_any_point_leaves_no_connection_in_use(kernel, raw, where):
    parts = {
        "headers": [5],
        "body": [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{", 5],
        "stream": [chunked(b"data: 1\n\n", end=False), 5],
    }[where]
    server, base = await raw(lambda n: parts if n == 1 else [answer(b'{"n": 2}')])
    if where == "stream":

        async def first() -> None:
            async for _ in call(kernel, base).lines():
                pass

        task = asyncio.ensure_future(first())
    else:
        task = asyncio.ensure_future(call(kernel, base).send())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await call(kernel, base).send() == {"n": 2}
    assert server.connections == 2
    assert kernel.pool.turn()._free == kernel.pool.limit


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nX-Injected: 1"},
        {"X-Evil": "a\nb"},
        {"Bad Name": "x"},
        {"X-Nul": "a\x00b"},
        {"Content-Length": "0"},
        {"Transfer-Encoding": "chunked"},
    ],
)
async def test_a_header_that_would_forge_another_is_refused_unsent(kernel, raw, headers):
    server, base = await raw(lambda n: [answer()])
    with pytest.raises(ModelRejected, match="header"):
        await call(kernel, base, headers=headers).send()
    assert server.requests == []


async def test_given_headers_replace_the_defaults(kernel, raw):
    server, base = await raw(lambda n: [answer()])
    headers = {"content-type": "application/json; charset=utf-8", "Host": "api.example"}
    await call(kernel, base, headers=headers).send()
    head = server.requests[0][0].decode()
    assert (
        head.lower().count("content-type") == 1
        and "content-type: application/json; charset" in head
    )
    assert head.count("Host") == 1 and "\r\nHost: api.example\r\n" in head


async def test_credentials_in_the_url_are_sent_and_named_in_no_error(kernel, raw):
    server, base = await raw(lambda n: [answer(b'{"error": "nope"}', status="401 Unauthorized")])
    url = base.replace("http://", "http://user:s3cret-pass@") + "/v1?key=k3y-in-query"
    kernel.secrets.add_url(url)
    with pytest.raises(ModelRejected) as info:
        await call(kernel, url).send()
    head = server.requests[0][0].decode()
    assert "\r\nAuthorization: Basic dXNlcjpzM2NyZXQtcGFzcw==\r\n" in head
    assert head.startswith("POST /v1?key=k3y-in-query HTTP/1.1")
    assert "s3cret" not in str(info.value) and "k3y" not in str(info.value)


async def test_spaces_in_a_path_are_quoted_and_newlines_dropped(kernel, raw):
    server, base = await raw(lambda n: [answer()])
    await call(kernel, f"{base}/models/a b\r\nX: 1:go").send()
    assert server.requests[0][0].startswith(b"POST /models/a%20bX:%201:go HTTP/1.1\r\n")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///nohost", "http://[::1/x"])
async def test_a_url_that_cannot_be_called_is_a_clear_rejection(kernel, url):
    with pytest.raises(ModelRejected, match="URL"):
        await call(kernel, url).send()


async def test_many_calls_share_few_connections(raw):
    server, base = await raw(lambda n: [0.01, answer(b'{"n": %d}' % n)])
    async with aopkit.Kernel(environ={}, connections=4) as kernel:
        answers = await asyncio.gather(*(call(kernel, base).send() for _ in range(100)))
    assert sorted(a["n"] for a in answers) == list(range(1, 101))
    assert server.connections == 4


async def test_the_limit_counts_idle_connections_too(raw):
    """``connections=2`` is two connections open, not two in use and any number idle: a
    call to another server closes an idle one first."""
    first, a = await raw(lambda n: [0.05, answer()])
    second, b = await raw(lambda n: [answer()])
    async with aopkit.Kernel(environ={}, connections=2) as kernel:
        await asyncio.gather(call(kernel, a).send(), call(kernel, a).send())
        assert first.open == 2
        await call(kernel, b).send()
        await asyncio.sleep(0.05)
        assert first.open + second.open == 2 and second.open == 1


async def test_idle_connections_are_closed_after_the_keepalive(kernel, raw, monkeypatch):
    monkeypatch.setattr(wire, "KEEPALIVE", 0.1)
    server, base = await raw(lambda n: [answer()])
    await call(kernel, base).send()
    (connection,) = [c for c in _connections(kernel)]
    await asyncio.sleep(0.35)
    assert connection.lost
    await call(kernel, base).send()
    assert server.connections == 2


async def test_the_key_is_in_no_transport_error(kernel, raw):
    key = Secret("sk-wire-DO-NOT-LEAK")
    kernel.secrets.add(key)
    _, base = await raw(lambda n: [b"HTTP/1.1 200 OK\r\nX: " + key.reveal().encode() + b"\r\n\x01"])
    with pytest.raises(ModelUnavailable) as info:
        await call(kernel, base, headers={"Authorization": f"Bearer {key.reveal()}"}).send()
    assert key.reveal() not in str(info.value)


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 (made by the openssl command)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_verifies_the_server_and_trusts_what_ssl_cert_file_names(
    kernel, certificate, monkeypatch
):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = Raw(lambda n: [answer(b'{"tls": true}')])
    base = (await server.start(tls=context)).replace("http://", "https://")
    try:
        with pytest.raises(
            ModelUnavailable, match=r"connection failed: .*CERTIFICATE_VERIFY_FAILED"
        ):
            await call(kernel, base).send()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a private CA is trusted
        wire._tls.cache_clear()
        assert await call(kernel, base).send() == {"tls": True}
    finally:
        wire._tls.cache_clear()
        await server.stop()


@pytest.mark.parametrize("status", ["301 Moved Permanently", "307 Temporary Redirect"])
async def test_a_redirect_is_not_followed_but_named(kernel, raw, status):
    moved = answer(b"", status=status, extra="Location: https://new.example/v1\r\n")
    server, base = await raw(lambda n: [moved])
    with pytest.raises(ModelRejected, match=r"redirected the call .* to https://new\.example/v1"):
        await call(kernel, base).send()
    with pytest.raises(ModelRejected, match="set the model's base_url"):
        await lines(call(kernel, base))
    assert len(server.requests) == 2


async def test_an_idle_connection_holds_no_answer(kernel, raw):
    """A thousand idle connections must not keep a thousand answers alive."""
    _, base = await raw(lambda n: [answer(b'{"big": "' + b"z" * 1_000_000 + b'"}')])
    assert len((await call(kernel, base).send())["big"]) == 1_000_000
    (connection,) = _connections(kernel)
    assert not connection.active and len(connection.body) == 0 and connection.headers == []


async def test_an_answer_without_end_is_failed_at_the_size_limit(kernel, raw, monkeypatch):
    """An endless answer (or a small gzip body that inflates without end) is failed, not read
    until memory runs out."""
    monkeypatch.setattr(wire, "MAX_ANSWER", 100_000)
    endless = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    endless += [b"%x\r\n%s\r\n" % (10_000, b"a" * 10_000)] * 20
    bomb = gzip.compress(b"0" * 10_000_000)  # 10 kB that would be 10 MB
    squeezed = answer(bomb, extra="Content-Encoding: gzip\r\n")
    _, base = await raw(lambda n: [*endless, 5] if n == 1 else [squeezed])
    with pytest.raises(ModelUnavailable, match="larger than 100000 bytes"):
        await call(kernel, base, timeout=2).send()
    with pytest.raises(ModelUnavailable, match="grows past 100000 bytes uncompressed"):
        await call(kernel, base, timeout=2).send()


async def test_a_name_is_resolved_and_its_addresses_tried_in_turn(kernel, raw):
    """``localhost`` may resolve to ::1 first; the server listens on 127.0.0.1 only."""
    server, base = await raw(lambda n: [answer()])
    assert await call(kernel, base.replace("127.0.0.1", "localhost")).send() == {"ok": True}
    assert server.requests[0][0].splitlines()[1].startswith(b"Host: localhost:")


async def test_a_server_that_never_finishes_connecting_times_out(kernel, raw):
    """A TLS handshake to a server that accepts the connection and says nothing: the
    connection itself is timed, not only the answer."""
    _, base = await raw(lambda n: [answer()])  # plain TCP: it never answers a ClientHello
    https = base.replace("http://", "https://")
    with pytest.raises(ModelUnavailable, match=r"no answer within 0\.3 s \(connecting\)"):
        await call(kernel, https, timeout=0.3).send()
    assert kernel.pool.wire().open_connections == 0
