"""What every fake provider server shares: scripted replies answered in order, every request
kept, and :class:`Raw` replies (an HTML error page, a ``null`` body) sent as they are, whatever
protocol the server speaks."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import attrs
from aiohttp import web

Serve = Callable[[web.Application], Awaitable[str]]


@attrs.frozen
class Raw:
    """A reply sent byte for byte as given: what a proxy, a gateway or a broken server sends."""

    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    headers: dict[str, str] = attrs.field(factory=dict)

    def response(self) -> web.Response:
        headers = {"Content-Type": self.content_type, **self.headers}
        return web.Response(status=self.status, text=self.body, headers=headers)


def html_page(status: int = 502) -> Raw:
    """The error page a reverse proxy sends when the service behind it is down."""
    body = (
        f"<html><head><title>{status} Bad Gateway</title></head><body><center>"
        f"<h1>{status} Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
    )
    return Raw(status, body, "text/html")


def null_body() -> Raw:
    """A 200 answer whose JSON body is ``null``."""
    return Raw(200, json.dumps(None))


class FakeServer:
    """A loopback stand-in for a provider's HTTP API. ``base_url = await fake.start(serve)``;
    script the answers with :meth:`then`; what it got is in ``requests`` (the JSON bodies),
    ``headers``, ``paths`` and ``queries``, one per request, in order. A subclass names its
    ``routes`` and answers one request in :meth:`answer`."""

    routes: ClassVar[tuple[str, ...]] = ()
    base_path: ClassVar[str] = ""  # what the model's base URL adds to the server's root

    def __init__(self, *replies: Any) -> None:
        self.replies: list[Any] = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.queries: list[dict[str, str]] = []
        self.base_url = ""

    def then(self, *replies: Any) -> Any:
        """Add replies to the script; returns the server, to chain."""
        self.replies.extend(replies)
        return self

    def app(self) -> web.Application:
        app = web.Application()
        for route in self.routes:
            app.router.add_post(route, self.receive)
        return app

    async def start(self, serve: Serve) -> str:
        """Serve on loopback with ``serve`` (the ``serve`` fixture); returns the base URL."""
        self.base_url = await serve(self.app()) + self.base_path
        return self.base_url

    def next_reply(self, default: Any) -> Any:
        return self.replies.pop(0) if self.replies else default

    async def receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.paths.append(request.path)
        self.queries.append(dict(request.query))
        if self.replies and isinstance(self.replies[0], Raw):
            raw: Raw = self.replies.pop(0)
            return raw.response()
        return await self.answer(request, body)

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        raise NotImplementedError
