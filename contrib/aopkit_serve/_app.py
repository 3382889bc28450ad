"""``build_app``: the served agents as one aiohttp application, every route behind a token."""

from __future__ import annotations

import hmac
import importlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

import aopkit
from aopkit.session import JournalStore, Store

from ._service import Service, Target

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

PROTOCOLS = ("openai", "a2a", "mcp", "agui")
SERVICE = web.AppKey("aopkit_serve.service", Service)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    target: Target,
    *,
    token: str,
    store: Store | None = None,
    kernel: aopkit.Kernel | None = None,
    toolkits: Iterable[aopkit.Toolkit] = (),
    protocols: Sequence[str] = PROTOCOLS,
    durable: JournalStore | None = None,
    private_media: bool = False,
) -> web.Application:
    """The application serving ``target`` (an agent, a list of agents, or a callable returning
    either per conversation) through ``protocols``; every request must carry
    ``Authorization: Bearer <token>``. Without a ``store`` conversations live in memory only.
    With ``durable`` (a journal store) each A2A conversation is a durable run: a turn paused
    for approval is answered on a restarted server. Media URLs in requests are fetched from
    public addresses only (``HTTPPool.public_media_only``), unless ``private_media``."""
    if not isinstance(token, str) or not token.strip() or token != token.strip():
        raise aopkit.ConfigurationError(
            "serve: token must be a non-empty str without surrounding spaces"
        )
    setups = [_protocol(name) for name in protocols]
    app = web.Application(middlewares=[_bearer(token)])
    app[SERVICE] = Service(
        target,
        kernel=kernel,
        store=store,
        toolkits=toolkits,
        durable=durable,
        public_media_only=not private_media,
    )
    app[SERVICE].kernel.secrets.add(token)  # scrubbed from logs, events and traces
    for setup in setups:
        setup(app, app[SERVICE])
    return app


def _protocol(name: str) -> Callable[[web.Application, Service], None]:
    """The ``setup`` of protocol ``name``, imported only now: a protocol's package is needed
    only when it is served."""
    if name not in PROTOCOLS:
        raise aopkit.ConfigurationError(
            f"serve: unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}"
        )
    module = f"{__package__}._{name}"
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise aopkit.AopkitError(
                f"serve: protocol {name!r} is not in this aopkit_serve install"
            ) from None
        raise aopkit.AopkitError(
            f"serve: protocol {name!r} needs the package {exc.name!r}: pip install 'aopkit[serve]'"
        ) from None
    setup: Callable[[web.Application, Service], None] = found.setup
    return setup


def _bearer(token: str) -> Middleware:
    """Refuse a request without the token (compared in constant time; never echoed)."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not hmac.compare_digest(_credentials(request), expected):
            return unauthorized()
        return await handler(request)

    return check


def _credentials(request: web.Request) -> bytes:
    """The bearer credentials of ``request`` (empty if none). The scheme is matched in any
    case and may be followed by several spaces (RFC 7235); two ``Authorization`` headers are
    ambiguous, so they count as none."""
    given = request.headers.getall("Authorization", [])
    if len(given) != 1:
        return b""
    scheme, _, credentials = given[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return b""
    return credentials.lstrip(" ").encode("utf-8", "surrogateescape")


def unauthorized() -> web.Response:
    """401 in OpenAI's error shape (which every protocol's client shows as a message)."""
    return web.json_response(
        {
            "error": {
                "message": "missing or wrong bearer token (header Authorization: Bearer ...)",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="aopkit"'},
    )
