"""HTTP for model providers: the kernel's connections (model calls on :mod:`aopkit.wire`, media
fetches on an aiohttp session), JSON calls, SSE and NDJSON streams, and the mapping of failures
onto :class:`ModelUnavailable` / :class:`ModelRejected`.

aiohttp is imported on first use, so ``import aopkit`` stays light.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import functools
import ipaddress
import json
import math
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

from .errors import ConfigurationError
from .formatting import Formatter, MediaError
from .message import Msg
from .models import Capabilities, ChatModel, ModelError, ModelRejected, ModelUnavailable
from .secret import Secret, SecretMissing, Secrets, names_a_credential
from .turns import Turns
from .wire import Connection, Wire, WireError, request_bytes, target

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import ResolveResult

    from .kernel import Kernel
    from .proxies import Proxies

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
# ``error.type`` values by which servers say the request itself is invalid, whatever the status.
INVALID_REQUEST_TYPES = frozenset({"invalid_request_error", "BadRequestError", "bad_request"})
DEFAULT_PORTS = {"http": 80, "https": 443}


DEFAULT_CONNECTIONS = 1024
MEDIA_TIMEOUT = 60.0
"""Seconds a media fetch may take (to connect, send and read it all)."""
MEDIA_REDIRECTS = 10
"""Redirects a media fetch follows; each new address is checked as the first was."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def connection_limit(value: object, where: str) -> int:
    """``value`` as a connection limit, or a clear error saying ``where`` it came from."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(
            f"{where} must be a whole number of connections of at least 1, got {value!r:.80}"
        )
    return value


class HTTPPool:
    """The kernel's connections, made lazily for the running event loop and reused by every
    model of the kernel: the model calls' keep-alive connections (:class:`~aopkit.wire.Wire`)
    and an aiohttp session for media fetches; ``await pool.close()`` releases both.

    ``limit`` caps the connections open at once, over all servers together (one server may use
    them all): it is how many requests are in flight at most. Requests beyond it wait for a
    free connection, untimed (a model's ``timeout`` starts once the request is sent).

    A model call waits for its turn (:meth:`turn`) *before* aiohttp builds its request: a
    crowd of calls far larger than the limit (100,000 agents on 1,024 connections) then holds
    one waiting future each, not a request object each, which the cyclic collector would
    traverse again and again while they wait."""

    public_media_only = False
    """Fetch media from public addresses only: never from loopback, private, link-local or
    other reserved ones (checked on the address connected to, at each redirect). For agents
    whose messages come from others: ``aopkit serve`` sets it on every served agent's kernel,
    so that a client cannot make the server fetch from its own network."""

    def __init__(self, limit: int = DEFAULT_CONNECTIONS, proxies: Proxies | None = None) -> None:
        self.limit = limit
        self.proxies = proxies  # from the kernel's environment: see aopkit.proxies
        self._session: aiohttp.ClientSession | None = None
        self._wire: Wire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turns: Turns | None = None

    def _bind(self) -> None:
        """Connections belong to one event loop: a kernel reused under a new loop gets new ones."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._session, self._loop = None, loop
            self._wire, self._turns = Wire(loop, self.limit), Turns(self.limit)

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session media fetches use (model calls use :meth:`wire`)."""
        self._bind()
        if self._session is None or self._session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self.limit, limit_per_host=0, resolver=_resolver_class()(self)
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    def wire(self) -> Wire:
        """The keep-alive connections model calls are sent on."""
        if self._loop is not asyncio.get_running_loop():
            self._bind()
        assert self._wire is not None
        return self._wire

    def turn(self) -> Turns:
        """What a request holds while it is in flight, ``limit`` at a time, first come first
        served: ``async with pool.turn(): ...``."""
        if self._loop is not asyncio.get_running_loop():
            self._bind()
        assert self._turns is not None
        return self._turns

    async def fetch(self, url: str, limit: int) -> tuple[bytes, str | None]:
        """GET ``url`` (media a model needs inline): (body, content type). It takes a turn as
        a model call does, gives up after ``MEDIA_TIMEOUT`` seconds, and refuses a body over
        ``limit`` bytes before it is read whole. Every failure is a
        :class:`~aopkit.formatting.MediaError` that names the URL, its credentials masked."""
        import aiohttp

        secrets = Secrets()
        secrets.add_url(url)  # a password or a signed query in it is named in no error
        shown = secrets.redact(url)
        too_large = f"{shown} is larger than {limit} bytes"
        timeout = aiohttp.ClientTimeout(total=MEDIA_TIMEOUT)
        turns = self.turn()
        await turns.take()  # inside a call that holds a turn, that one: never a second
        try:
            for _ in range(MEDIA_REDIRECTS + 1):
                self._check_host(url, shown)
                async with self.session().get(
                    url, timeout=timeout, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECTS and location:
                        url = urljoin(url, location)
                        continue
                    if response.status >= 400:
                        raise MediaError(f"fetching {shown} failed with HTTP {response.status}")
                    if (response.content_length or 0) > limit:
                        raise MediaError(too_large)
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(65536):
                        body += chunk
                        if len(body) > limit:
                            raise MediaError(too_large)
                    return bytes(body), response.content_type
            raise MediaError(f"fetching {shown} was redirected more than {MEDIA_REDIRECTS} times")
        except asyncio.TimeoutError:
            raise MediaError(f"fetching {shown} took more than {MEDIA_TIMEOUT} s") from None
        except aiohttp.ClientError as exc:
            why = secrets.redact(f"{type(exc).__name__}: {exc}")
            raise MediaError(f"fetching {shown} failed: {why}") from None
        finally:
            turns.release()

    def _check_host(self, url: str, shown: str) -> None:
        """A host given as an address (which no resolver sees) must be public when
        ``public_media_only``; a host name is checked by the session's resolver."""
        if not self.public_media_only:
            return
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return  # aiohttp refuses it too
        address = _address(host)
        if address is not None and not _public(address):
            raise MediaError(f"fetching {shown} refused: {NOT_PUBLIC.format(host)}")

    async def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


NOT_PUBLIC = "{} is not a public address (this kernel fetches media from public hosts only)"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, in any form a connection would read as one (``127.1`` and
    ``0x7f000001`` too, which some aiohttp versions connect to without resolving), else
    None: a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return (mapped or address).is_global


@functools.cache
def _resolver_class() -> type[Any]:
    """aiohttp's threaded resolver, keeping only public addresses when the pool says so: the
    address checked is the one connected to, so a name that resolves differently the second
    time cannot lead a fetch inside."""
    import aiohttp

    class PublicResolver(aiohttp.ThreadedResolver):
        def __init__(self, pool: HTTPPool) -> None:
            super().__init__()
            self.pool = pool

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            found = await super().resolve(host, port, family)
            if not self.pool.public_media_only:
                return found
            public = [a for a in found if _public(ipaddress.ip_address(a["host"]))]
            if not public:  # aiohttp's error shows an OSError's strerror
                raise OSError(errno.EACCES, NOT_PUBLIC.format(host))
            return public

    return PublicResolver


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (lower case) in ``headers``, whatever case they give it in."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``."""
    if (ms := header(headers, "retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # A date is whole seconds: the wait up to it, rounded up, is never early and is the same
    # in every run (a recorded session records it alike).
    return float(max(0, math.ceil(when.timestamp() - time.time())))


def provider_message(body: str, content_type: str = "") -> str:
    """The provider's own explanation from an error body (JSON ``error.message`` and kin, also
    inside an SSE ``data:`` line), or a short note for HTML pages and other text."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
        sse = [line[5:] for line in body.splitlines() if line.startswith("data:")]
        if sse:
            return provider_message(sse[0], content_type)
    if isinstance(data, list) and data:  # Gemini sometimes wraps the error in a list
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg")
            kind = error.get("type") or error.get("status") or error.get("code")
            if message:
                return f"{kind}: {message}" if isinstance(kind, str) else str(message)
        elif isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return str(data["message"])
    text = body.strip()
    if "html" in content_type or text.lower().startswith(("<!doctype html", "<html")):
        return "the server answered with an HTML page instead of JSON (a proxy or gateway error?)"
    return text[:500] or "no details in the response body"


def declares_invalid_request(body: str) -> bool:
    """Whether a JSON error body says the request is at fault: an ``error.type`` such as
    ``invalid_request_error``, or an ``error.code`` / ``code`` that is a client-error status
    (other than 408, 409 and 429). Some servers send such errors with a 5xx status."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    error = data.get("error", data)
    if not isinstance(error, dict):
        return False
    if error.get("type") in INVALID_REQUEST_TYPES:
        return True
    code = error.get("code", data.get("code"))
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return isinstance(code, int) and 400 <= code < 500 and code not in RETRYABLE_STATUS


def error_for_status(
    model: str,
    status: int,
    headers: Mapping[str, str],
    body: str,
    secrets: Secrets | None = None,
    retry_after_in_body: Callable[[str], float | None] | None = None,
) -> ModelUnavailable | ModelRejected:
    """The model error for an HTTP error answer: retryable for 408/409/429/5xx, except a 5xx
    whose body says the request is invalid (retrying the same request cannot help). Secrets are
    scrubbed from the body first, so no cut (the message is shortened) can leave a piece of one
    behind."""
    if secrets is not None:
        body = secrets.redact(body)
    message = provider_message(body, header(headers, "content-type") or "")
    if status in RETRYABLE_STATUS and not (status >= 500 and declares_invalid_request(body)):
        wait = retry_after(headers)
        if wait is None and retry_after_in_body is not None:
            wait = retry_after_in_body(body)
        return ModelUnavailable(model, message, status=status, retry_after=wait)
    return ModelRejected(model, message, status=status)


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """``base`` with ``extra`` laid over it; nested objects are merged key by key. Without
    ``extra``, ``base`` itself (not a copy)."""
    if not extra:
        return base
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class Request:
    """One HTTP request of a model call; ``send`` / ``lines`` map every failure onto the kernel's
    model errors. Secrets are scrubbed from everything that comes back (bodies, stream lines,
    error texts) before anything reads it, and no error keeps the transport's exception (whose
    text and attributes may hold headers and URLs) as its cause or context."""

    def __init__(
        self,
        model: str,
        pool: HTTPPool,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        secrets: Secrets | None = None,
        retry_after_in_body: Callable[[str], float | None] | None = None,
    ) -> None:
        # Thousands of requests may be in flight: each keeps only what is its own.
        self.model, self.pool, self.url, self.payload = model, pool, url, payload
        self.headers = {} if headers is None else headers
        self.timeout = timeout
        self.secrets = Secrets() if secrets is None else secrets
        self.retry_after_in_body = retry_after_in_body

    async def send(self) -> dict[str, Any]:
        """POST the payload and return the decoded JSON answer (always an object)."""
        failure: ModelError | None = None
        turns = self.pool.turn()
        await turns.take()  # not ``async with``: its bound __aexit__ would be held in flight
        try:
            connection = await self._open()
            try:
                body = self.secrets.redact((await connection.whole()).decode("utf-8", "replace"))
                status = connection.status
                if status >= 300:
                    failure = self._error(status, connection, body)
            finally:
                connection.finish()
        except Exception as exc:
            failure = self._transport_error(exc)
        finally:
            turns.release()
        if failure is not None:
            try:  # outside the except block: the transport error is not its context
                raise failure
            finally:
                del failure  # its traceback holds this frame: no local may hold it (a cycle)
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise ModelUnavailable(
                self.model, f"the answer was not JSON: {provider_message(body)}", status=status
            ) from None
        if not isinstance(answer, dict):  # ``null``, a list: no provider answers with those
            raise ModelUnavailable(
                self.model, f"the answer was not a JSON object: {body[:200]!r}", status=status
            )
        return answer

    async def lines(self) -> AsyncGenerator[bytes, None]:
        """POST the payload and yield the answer's lines (for SSE and NDJSON streams)."""
        failure: ModelError | None = None
        turns = self.pool.turn()
        await turns.take()
        try:
            connection = await self._open()
            try:
                if connection.status >= 300:
                    whole = (await connection.whole()).decode("utf-8", "replace")
                    failure = self._error(connection.status, connection, self.secrets.redact(whole))
                else:
                    while (line := await connection.line()) is not None:
                        yield self.secrets.redact_bytes(line)
            finally:
                connection.finish()  # a stream left midway closes its connection
        except Exception as exc:
            failure = self._transport_error(exc)
        finally:
            turns.release()
        if failure is not None:
            try:  # outside the except block: the transport error is not its context
                raise failure
            finally:
                del failure  # its traceback holds this frame: no local may hold it (a cycle)

    async def _open(self) -> Connection:
        where = target(self.url)
        proxies = self.pool.proxies
        if proxies is not None:
            where = proxies.route(where)
        data = request_bytes(where, self.headers, _json_bytes(self.payload))
        return await self.pool.wire().open(where, data, self.timeout)

    def _error(self, status: int, connection: Connection, body: str) -> ModelError:
        headers = connection.response_headers()
        if status < 400:  # a model API that moved: following it would hide the move for good
            where = self.secrets.redact(header(headers, "location") or "nowhere")
            return ModelRejected(
                self.model,
                f"the server redirected the call (HTTP {status}) to {where:.200}: "
                "set the model's base_url to the new address",
                status=status,
            )
        return error_for_status(self.model, status, headers, body, None, self.retry_after_in_body)

    def _transport_error(self, exc: Exception) -> ModelError:
        """A model error for what went wrong sending the request or reading the answer, in
        words scrubbed of secrets. Errors that are not the transport's are not retryable."""
        if isinstance(exc, ModelError):
            return exc
        if isinstance(exc, WireError):
            what = self.secrets.redact(str(exc))
            return (
                ModelRejected(self.model, what)
                if exc.rejected
                else ModelUnavailable(self.model, what)
            )
        what = f"the request could not be sent: {type(exc).__name__}: {exc}"
        return ModelRejected(self.model, self.secrets.redact(what))


def _json_bytes(payload: Any) -> bytes:
    """The payload as JSON text (ASCII: any text in it is escaped, so it always encodes)."""
    return json.dumps(payload, separators=(",", ":")).encode()


async def sse_events(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events as ``(event, data)``; multi-line data joined by newlines."""
    data: list[str]
    event, data = "message", []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    # An event not closed by a blank line when the stream ends is incomplete: it is discarded
    # (as the SSE specification says), so a cut stream shows as a missing final event.


def stream_object(data: str | bytes, model: str) -> dict[str, Any]:
    """One event of a stream, which every provider sends as a JSON object: anything else (cut
    midway, garbled, ``null``) is a retryable error."""
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict):
        raise ModelUnavailable(model, f"stream cut or garbled: {data[:200]!r}")
    return event


async def ndjson(lines: AsyncIterator[bytes], model: str) -> AsyncIterator[dict[str, Any]]:
    """Objects of a newline-delimited JSON stream; a line cut midway is a retryable error."""
    async for raw in lines:
        if line := raw.strip():
            yield stream_object(line, model)


@functools.lru_cache(maxsize=256)
def _server_of(base_url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(base_url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


class HTTPChatModel(ChatModel):
    """A chat model behind an HTTP API: base URL, key, timeout, extra body fields and headers,
    from arguments, else ``<ENV_PREFIX>_BASE_URL`` / ``<ENV_PREFIX>_API_KEY``, else defaults.

    The key is kept as a :class:`Secret`: it is in no repr, event, log or exception text.
    ``api_key_env`` / ``api_key_file`` name where the key lives instead of giving it: each
    process (each Ray actor) reads it there itself. The key, every credential header (see
    :func:`~aopkit.secret.names_a_credential`, or any value given as a :class:`Secret`) and
    credentials inside ``base_url`` join ``kernel.secrets``, which scrubs them from everything.
    """

    default_base_url: ClassVar[str] = ""
    env_prefix: ClassVar[str] = ""
    formatter_name: ClassVar[str] = ""

    def __init__(
        self,
        model: str,
        *,
        kernel: Kernel,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        api_key_env: str | None = None,
        api_key_file: str | os.PathLike[str] | None = None,
        timeout: float = 120.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str | Secret] | None = None,
        formatter: str | Formatter | None = None,
        capabilities: Capabilities | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(model, kernel=kernel, capabilities=capabilities)
        env = kernel.environ if environ is None else environ
        prefix = self.env_prefix
        self.base_url = base_url or env.get(f"{prefix}_BASE_URL") or self.default_base_url
        self.base_url = self.base_url.rstrip("/")
        self.api_key = _key(api_key, api_key_env, api_key_file, env, f"{prefix}_API_KEY")
        self.timeout = float(timeout)
        self.extra_body = dict(extra_body or {})
        kernel.secrets.add(self.api_key)
        kernel.secrets.add_headers(headers or {})
        kernel.secrets.add_url(self.base_url)
        # Credentials are kept as Secrets, so that not even a repr of the headers shows them.
        self.headers: dict[str, str | Secret] = {
            name: Secret(value) if value in kernel.secrets or names_a_credential(name) else value
            for name, value in (headers or {}).items()
        }
        self.formatter: Formatter = (
            formatter
            if isinstance(formatter, Formatter)
            else kernel.formatters[formatter or self.formatter_name]
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} at {self.kernel.secrets.redact(self.base_url)}>"

    def turns(self) -> Turns:
        """The kernel's connection turns, shared by every model of the kernel."""
        return self.kernel.pool.turn()

    @property
    def server(self) -> tuple[str, int] | None:
        """The host and port of ``base_url`` (never its credentials or path); ``None`` when it
        names no host or an invalid port. Parsed once per ``base_url``, not per call."""
        parsed = _server_of(self.base_url)
        return None if parsed is None else (self.kernel.secrets.redact(parsed[0]), parsed[1])

    def auth_headers(self) -> dict[str, str]:
        """Headers that carry the key; providers override (``Authorization: Bearer`` here)."""
        return {"Authorization": f"Bearer {self.api_key.reveal()}"} if self.api_key else {}

    def request(self, path: str, payload: Mapping[str, Any]) -> Request:
        """A request to ``base_url + path`` with the auth headers and the extra body fields
        merged in (nested objects key by key)."""
        headers = self.auth_headers()
        if self.headers:  # laid over the auth headers, in a new dict
            given = self.headers.items()
            headers = {
                **headers,
                **{n: v.reveal() if isinstance(v, Secret) else v for n, v in given},
            }
        return Request(
            self.name,
            self.kernel.pool,
            join_url(self.base_url, path),
            merged(payload, self.extra_body),
            headers=headers,
            timeout=self.timeout,
            secrets=self.kernel.secrets,
            # Passed only by providers that read waits there: one object less per call.
            retry_after_in_body=None
            if type(self).retry_after_in_body is HTTPChatModel.retry_after_in_body
            else self.retry_after_in_body,
        )

    def retry_after_in_body(self, body: str) -> float | None:
        """The wait an error body asks for, for providers that say it there, not in a header."""
        return None

    async def format(self, messages: Sequence[Msg]) -> Any:
        return await self.formatter.format(
            messages, capabilities=self.capabilities, pool=self.kernel.pool
        )


def join_url(base: str, path: str) -> str:
    """``base + path``, a query string of ``base`` (``?api-version=``) kept after the path's."""
    head, sep, query = base.partition("?")
    if not sep:
        return base + path
    return f"{head.rstrip('/')}{path}{'&' if '?' in path else '?'}{query}"


def _key(
    value: str | Secret | None,
    env_name: str | None,
    file: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    default_env: str,
) -> Secret | None:
    """The API key from the first of: the value, the named variable or file, the provider's
    variable. The process environment is named, not copied, so it travels by name."""
    if value:
        return Secret(value)
    if file is not None:
        return Secret.from_file(file)
    name = env_name or (default_env if environ.get(default_env) else None)
    if name is None:
        return None
    if environ is os.environ:
        return Secret.from_env(name)
    if not environ.get(name):
        raise SecretMissing(f"environment variable {name} (api_key_env) is not set")
    return Secret(environ[name])
