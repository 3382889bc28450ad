"""HTTP/1.1 for model calls, spoken directly over asyncio: keep-alive connections to model
servers, answers read by httptools (llhttp, the parser Node.js uses).

A model call is one kind of request, a POST of JSON to a server the user configured (perhaps
through a proxy: :mod:`aopkit.proxies`). A general client's machinery (cookies, redirects,
traces, request and response objects of many parts) cost more CPU than all the rest of a model
call, and kept about 45 objects per call in flight for the cyclic collector to walk; here a
call in flight holds a future and a timer.
Media fetches, which go anywhere and follow redirects, stay with aiohttp (``HTTPPool.fetch``).

Nothing here knows models: failures are :class:`WireError`, which :class:`~aopkit.http.Request`
turns into model errors.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import socket
import ssl
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    import httptools

KEEPALIVE = 15.0
"""Seconds an idle connection is kept for reuse: a server or a NAT box may drop it silently
later, and a request on a dead connection would wait out its whole timeout."""
STREAM_BUFFER = 1 << 20
"""Bytes of a stream read ahead of its reader; beyond them the server is not read."""
MAX_LINE = 16 << 20
"""The longest line of a stream (an SSE event of a large tool call fits many times)."""
MAX_PROXY_ANSWER = 64 << 10
"""The longest head a proxy may answer CONNECT with."""
MAX_ANSWER = 256 << 20
"""The largest answer that is not a stream: a server that sends more (or a compressed body
that would grow past it) is failed, not read until memory runs out."""

# What every request says unless its headers say otherwise (by name, any case).
DEFAULT_HEADERS = {
    "content-type": "Content-Type: application/json\r\n",
    "accept": "Accept: */*\r\n",
    # Answers are small beside requests: not worth the server's and our CPU to compress.
    "accept-encoding": "Accept-Encoding: identity\r\n",
    "user-agent": "User-Agent: aopkit\r\n",
}
SET_BY_THE_WIRE = frozenset({"content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_A_VALUE = re.compile(r"[\r\n\x00]")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%?"


class WireError(Exception):
    """A request that failed on the way: its text says how, in words for the user.
    ``rejected``: the request itself is at fault (retrying it cannot help)."""

    def __init__(self, what: str, *, rejected: bool = False) -> None:
        super().__init__(what)
        self.rejected = rejected


class Proxy(NamedTuple):
    """An HTTP proxy calls go through (see :mod:`aopkit.proxies`)."""

    host: str
    port: int
    shown: str  # ``host:port``, for errors: never its credentials
    authorization: str  # a Proxy-Authorization header made of its URL's credentials, or ""
    secrets: tuple[str, ...]  # what they look like in text: the password and the header's token

    def __repr__(self) -> str:
        return f"<Proxy {self.shown}>"  # not its credentials


class Target(NamedTuple):
    """Where a URL's requests go, parsed once per URL."""

    key: tuple[object, ...]  # the connections that can carry them: host, port, TLS, proxy
    host: str
    port: int
    tls: bool
    start: str  # the request line and Host header
    basic: str | None  # an Authorization header made of credentials in the URL
    via: Proxy | None = None  # the proxy: a tunnel to the server if TLS, else the request's
    # first stop (the request line then names the whole URL)


@functools.lru_cache(maxsize=256)
def target(url: str) -> Target:
    """The target of ``url``, or a :class:`WireError` that says what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WireError(f"the URL is not valid: {exc}", rejected=True) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WireError("the URL must be http:// or https:// and name a host", rejected=True)
    tls = parts.scheme == "https"
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise WireError("the URL's host name is not valid", rejected=True) from None
    port = port or (443 if tls else 80)
    shown = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        shown = f"{shown}:{port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_PATH_SAFE)}"
    basic = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        basic = f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
    start = f"POST {path} HTTP/1.1\r\nHost: {shown}\r\n"
    return Target((host, port, tls), host, port, tls, start, basic)


def routed(where: Target, proxy: Proxy) -> Target:
    """``where`` reached through ``proxy``: by a tunnel for TLS (the proxy sees only the host
    and port), else by asking the proxy for the whole URL (RFC 9112, absolute form). Kept by
    :meth:`~aopkit.proxies.Proxies.route`, once per target."""
    if not where.tls:
        line, rest = where.start.split("\r\n", 1)
        method, path, version = line.split(" ")
        authority = rest.removeprefix("Host: ").split("\r\n", 1)[0]
        where = where._replace(start=f"{method} http://{authority}{path} {version}\r\n{rest}")
    return where._replace(key=(*where.key, proxy), via=proxy)


def request_bytes(where: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The whole request: its head (the caller's headers over the defaults) and ``body``."""
    for name, value in headers.items():
        if _TOKEN.fullmatch(name) is None or _NOT_IN_A_VALUE.search(value) is not None:
            raise WireError(
                f"header {name!r:.80}: a name must be a token and a value one line",
                rejected=True,
            )
    names = {name.lower() for name in headers}
    if names & SET_BY_THE_WIRE:
        raise WireError(
            f"headers {sorted(names & SET_BY_THE_WIRE)} are set by aopkit", rejected=True
        )
    start = where.start
    if "host" in names:
        start = start[: start.index("\r\n") + 2]
    defaults = "".join([line for name, line in DEFAULT_HEADERS.items() if name not in names])
    if where.basic and "authorization" not in names:
        defaults += where.basic
    if where.via is not None and not where.tls and "proxy-authorization" not in names:
        defaults += where.via.authorization
    given = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    head = f"{start}{defaults}{given}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """The system's trusted certificates, loaded once (that takes milliseconds)."""
    return ssl.create_default_context()


class Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time. The parser's callbacks only note
    what came; the request's coroutine, woken through ``_waiter``, reads it."""

    def __init__(self, wire: Wire, key: tuple[object, ...]) -> None:
        self.wire, self.key = wire, key
        self.loop = wire.loop
        import httptools  # on first use, as aiohttp is: ``import aopkit`` stays light

        self.parser: httptools.HttpResponseParser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.active = self.lost = False
        # What one request has come to (``begin`` sets them afresh).
        self.started = self.complete = self.streaming = self.keep = self.paused = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.error: WireError | None = None
        self.inflate: zlib._Decompress | None = None
        self.timeout: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.read_at = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.wire.open_connections += 1

    # -- one request ------------------------------------------------------------------------

    def begin(self, data: bytes, timeout: float | None, now: float) -> None:
        """Send a request (the whole of it; the transport buffers what the socket will not
        take yet) and start timing the answer."""
        assert self.transport is not None
        self.active, self.started, self.complete, self.streaming = True, False, False, False
        self.status, self.keep, self.paused = 0, False, False
        self.headers, self.body, self.error, self.inflate = [], bytearray(), None, None
        self.timeout, self.read_at = timeout, now
        self.timer = None if timeout is None else self.loop.call_at(now + timeout, self._timed)
        self.transport.write(data)

    async def head(self) -> None:
        """Wait for the answer's status and headers."""
        while not self.status and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def whole(self) -> bytearray:
        """Wait for the rest of the answer and return its body."""
        while not self.complete and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error
        return self.body

    async def line(self) -> bytes | None:
        """The answer's next line (with its newline; the last may have none), None at its end."""
        self.streaming = True
        body = self.body
        while True:
            end = body.find(b"\n")
            if end >= 0:
                line = bytes(body[: end + 1])
                del body[: end + 1]
                if self.paused and len(body) < STREAM_BUFFER // 2:
                    self._resume()
                return line
            if self.error is not None:
                raise self.error
            if self.complete:
                line, self.body = bytes(body), bytearray()
                return line or None
            if len(body) > MAX_LINE:
                self._fail(WireError(f"a line of the stream is longer than {MAX_LINE} bytes"))
                continue
            if self.paused:
                self._resume()
            await self._wait()

    def response_headers(self) -> dict[str, str]:
        """The answer's headers, by name as the server wrote it (error answers need them)."""
        return {name.decode("latin-1"): value.decode("latin-1") for name, value in self.headers}

    def finish(self) -> None:
        """The request is over: keep the connection for the next one if it can be, else
        close it (an answer not read to its end leaves it in the middle of one)."""
        self.active = False
        if self.timer is not None:
            self.timer.cancel()
        self._waiter = None
        self.body, self.headers = bytearray(), []  # an idle connection holds no answer
        if self.complete and self.keep and not self.lost and self.error is None:
            self.wire.keep(self)
        else:
            self.close()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self) -> None:
        self._waiter = waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: WireError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _timed(self) -> None:
        """The read timer: the answer fails after ``timeout`` seconds with nothing read
        (not counting while a stream's reader is behind)."""
        assert self.timeout is not None
        late = self.read_at + self.timeout
        now = self.loop.time()
        if self.paused or now < late:
            self.timer = self.loop.call_at(now + self.timeout if self.paused else late, self._timed)
        else:
            self.timer = None
            self._fail(WireError(f"no answer within {self.timeout:g} s"))

    def _resume(self) -> None:
        self.paused = False
        self.read_at = self.loop.time()
        assert self.transport is not None
        self.transport.resume_reading()

    # -- what the server sends ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.active or self.error is not None:
            self.close()  # nothing was asked: a server that talks out of turn is not reused
            return
        self.started = True
        self.read_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # the parser's: its callbacks raise nothing
            import httptools

            if isinstance(exc, httptools.HttpParserUpgrade):
                self._fail(WireError("the server switched to another protocol"))
            else:
                self._fail(WireError(f"the server's answer is not valid HTTP: {exc}"))

    # Once the answer is complete, whatever follows was not asked for: it is not read, and the
    # connection is not reused.

    def on_message_begin(self) -> None:
        if self.complete:
            self.keep = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self.headers = []  # an interim answer (103 Early Hints): the real one follows
            return
        self.status, self.keep = status, self.parser.should_keep_alive()
        for name, value in self.headers:
            if name.lower() == b"content-encoding":
                coding = value.strip().lower()
                if coding in (b"gzip", b"x-gzip", b"deflate"):
                    self.inflate = zlib.decompressobj(31 if coding != b"deflate" else 15)
                elif coding != b"identity":
                    reason = f"the answer is in content encoding {coding.decode('latin-1')!r:.40}"
                    self._fail(WireError(f"{reason}, which was not asked for"))
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        if self.inflate is not None:
            try:
                body = self.inflate.decompress(body, MAX_ANSWER)
            except zlib.error:
                self._fail(WireError("the answer's compressed body is corrupt"))
                return
            if self.inflate.unconsumed_tail:
                self._fail(WireError(f"the answer grows past {MAX_ANSWER} bytes uncompressed"))
                return
        self.body += body
        if not self.streaming:
            if len(self.body) > MAX_ANSWER:
                self._fail(WireError(f"the answer is larger than {MAX_ANSWER} bytes"))
        else:
            if len(self.body) > STREAM_BUFFER and not self.paused:
                self.paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if not self.status or self.complete:
            return  # the end of an interim answer, or of one not asked for
        if self.inflate is not None and not self.inflate.eof:
            self._fail(WireError("the response was cut off inside its compressed body"))
            return
        self.complete = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.wire.forget(self)
        if not self.active or self.complete or self.error is not None:
            return
        if self.status and not self._framed():
            self.complete = True  # a body without a length ends when the connection does
            self._wake()
        elif self.started:
            self._fail(WireError("the response was cut off: the server closed the connection"))
        else:
            self._fail(WireError("connection failed: the server closed the connection"))

    def _framed(self) -> bool:
        """Whether the answer said where its body ends (a length, or chunks)."""
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" in names or b"transfer-encoding" in names


class Wire:
    """The keep-alive connections of one event loop, by server; an idle one is reused most
    recent first and closed after ``KEEPALIVE`` seconds. At most ``limit`` are open: the
    caller holds in flight no more than that (``HTTPPool.turn``), and a new connection closes
    the longest idle one when the limit is reached."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop, self.limit = loop, limit
        self.open_connections = 0
        self._idle: dict[tuple[object, ...], dict[Connection, None]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    async def open(self, where: Target, data: bytes, timeout: float | None) -> Connection:
        """Send a request of ``data`` (see :func:`request_bytes`) to ``where``; the
        connection, once the answer's head has come (the caller reads the rest, then calls
        ``finish``). A reused connection the server closed before answering (it closes idle
        ones when it likes) is retried once on a new one: the server did not read the
        request."""
        now = self.loop.time()
        connection, reused = self._idle_connection(where.key, now)
        while True:
            if connection is None:
                connection = await self._connect(where, timeout)
                now = self.loop.time()
            connection.begin(data, timeout, now)
            try:
                await connection.head()
            except WireError:
                connection.finish()
                if reused and not connection.started:
                    connection, reused = None, False
                    continue
                raise
            except BaseException:
                connection.finish()
                raise
            return connection

    def keep(self, connection: Connection) -> None:
        self._idle.setdefault(connection.key, {})[connection] = None
        if self._sweep is None:
            self._sweep = self.loop.call_later(KEEPALIVE, self._close_idle)

    def forget(self, connection: Connection) -> None:
        self.open_connections -= 1
        idle = self._idle.get(connection.key)
        if idle is not None:
            idle.pop(connection, None)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in list(idle):
                connection.close()
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _idle_connection(
        self, key: tuple[object, ...], now: float
    ) -> tuple[Connection | None, bool]:
        idle = self._idle.get(key)
        while idle:
            connection, _ = idle.popitem()
            if not connection.lost and connection.read_at > now - KEEPALIVE:
                return connection, True
            connection.close()
        return None, False

    async def _connect(self, where: Target, timeout: float | None) -> Connection:
        if self.open_connections >= self.limit:
            self._close_longest_idle()
        try:
            return await asyncio.wait_for(self._connected(where), timeout)
        except asyncio.TimeoutError:
            raise WireError(f"no answer within {timeout:g} s (connecting)") from None
        except OSError as exc:  # refused, an unknown name, TLS refused (an SSLError)
            through = f" (through the proxy {where.via.shown})" if where.via else ""
            raise WireError(f"connection failed{through}: {type(exc).__name__}: {exc}") from None

    async def _connected(self, where: Target) -> Connection:
        """A connection to ``where``: its addresses tried as RFC 8305 says (an IPv6 route that
        drops packets costs a quarter of a second, not the timeout) by aiohappyeyeballs, which
        hands over a connected socket, so any event loop (uvloop too) can take it."""
        from aiohappyeyeballs import start_connection

        first = where.via or where
        found = await self.loop.getaddrinfo(first.host, first.port, type=socket.SOCK_STREAM)
        sock = await start_connection(found, happy_eyeballs_delay=0.25, interleave=1)
        try:
            if where.via is not None and where.tls:
                await self._tunnel(sock, where, where.via)
            _, connection = await self.loop.create_connection(
                lambda: Connection(self, where.key),
                sock=sock,
                ssl=_tls() if where.tls else None,
                server_hostname=where.host if where.tls else None,
            )
        except BaseException:
            sock.close()
            raise
        return connection

    async def _tunnel(self, sock: socket.socket, where: Target, proxy: Proxy) -> None:
        """Ask ``proxy`` for a tunnel to ``where`` (RFC 9110, CONNECT) on ``sock``; TLS to the
        server then runs through it. The proxy's answer is read up to its blank line and no
        further: the server's first bytes only come after the TLS handshake is begun here."""
        sock.setblocking(False)
        authority = (
            f"[{where.host}]:{where.port}" if ":" in where.host else f"{where.host}:{where.port}"
        )
        ask = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{proxy.authorization}\r\n"
        await self.loop.sock_sendall(sock, ask.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            if len(answer) > MAX_PROXY_ANSWER:
                raise WireError(f"the proxy {proxy.shown} answered CONNECT with no end of head")
            more = await self.loop.sock_recv(sock, MAX_PROXY_ANSWER)
            if not more:
                raise WireError(f"the proxy {proxy.shown} closed the connection, no tunnel made")
            answer += more
        head, _, early = answer.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, rest = line.partition(" ")
        status = rest[:3]
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise WireError(f"the proxy {proxy.shown} answered CONNECT with no HTTP: {line!r:.100}")
        if status in ("401", "407"):  # 407 says it; tinyproxy says 401 to wrong ones
            why = (
                "refused the credentials in its URL"
                if proxy.authorization
                else ("wants credentials: give them in its URL, http://user:password@host:port")
            )
            raise WireError(f"the proxy {proxy.shown} {why} (HTTP {status})", rejected=True)
        if status[0] != "2":
            raise WireError(
                f"the proxy {proxy.shown} made no tunnel to {authority}: {line:.200}",
                rejected=status[0] == "4" and status not in ("408", "429"),
            )
        if early:
            raise WireError(f"the proxy {proxy.shown} sent bytes before TLS began")

    def _close_longest_idle(self) -> None:
        oldest = min(
            (next(iter(idle)) for idle in self._idle.values() if idle),
            key=lambda connection: connection.read_at,
            default=None,
        )
        if oldest is not None:
            del self._idle[oldest.key][oldest]
            oldest.close()

    def _close_idle(self) -> None:
        """Close the connections idle for ``KEEPALIVE`` seconds; look again later if any stay."""
        self._sweep = None
        stale = self.loop.time() - KEEPALIVE
        for idle in self._idle.values():
            for connection in [c for c in idle if c.read_at <= stale]:
                del idle[connection]
                connection.close()
        if any(self._idle.values()):
            self._sweep = self.loop.call_later(KEEPALIVE, self._close_idle)
