"""One aiohttp request through an ASGI application: the bridge to protocol SDKs that speak ASGI.

The request body goes in whole (aiohttp bounds its size); the response goes out as the
application sends it (an SSE stream included). The client leaving shows as ``http.disconnect``:
``receive`` watches the connection once the body is read. When aiohttp cancels the handler, the
application still runs to its end (seeing the disconnect), as under an ASGI server, so a
session is never left half made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
WATCH_SECONDS = 0.25  # how soon a client that left is noticed


async def call_asgi(app: ASGIApp, request: web.Request) -> web.StreamResponse:
    """Run ``app`` for ``request`` and return the response it sent (500 if it sent none)."""
    response: web.StreamResponse | None = None
    gone = asyncio.Event()  # the response is complete, or the client left
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True  # whole: within the app's client_max_size, and cached by aiohttp
            return {"type": "http.request", "body": await request.read(), "more_body": False}
        while not gone.is_set() and _connected(request):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), WATCH_SECONDS)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if gone.is_set():
            return  # as ASGI servers do: the app learns of it from ``receive``
        try:
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for name, value in message.get("headers", ()):
                    response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body" and response is not None:
                if message.get("body"):
                    await response.write(message["body"])
                if not message.get("more_body", False):
                    await response.write_eof()
                    gone.set()
        except ConnectionError:
            gone.set()

    work = asyncio.ensure_future(app(_scope(request), receive, send))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:  # aiohttp gave up on the client: the app winds down
        gone.set()
        await asyncio.gather(work, return_exceptions=True)
        raise
    finally:
        gone.set()
    return response if response is not None else web.Response(status=500)


def _connected(request: web.Request) -> bool:
    return request.transport is not None and not request.transport.is_closing()


def _scope(request: web.Request) -> Message:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = request.transport.get_extra_info("sockname") if request.transport else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "query_string": request.query_string.encode(),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": tuple(peer[:2]) if peer else None,
        "server": tuple(host[:2]) if host else None,
        "state": {},
    }
