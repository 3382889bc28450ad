"""The Studio server: an event sink that never blocks an agent, a WebSocket fan-out with
catch-up, the incident queue, browser input for user agents, and past runs from JSONL traces."""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import secrets
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import WSMsgType, web
from loguru import logger

import aopkit
from aopkit import jsontext
from aopkit.durable import ApprovalRequest, Decision
from aopkit.events import Event, RoundFinished
from aopkit.faults import Incident, Resolution
from aopkit.message import Msg, new_id
from aopkit.net import is_loopback

from .schema import problem

if TYPE_CHECKING:
    from aopkit.agent import Agent, Incoming

STATIC = Path(__file__).parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Client:
    """One connected page: frames wait in a bounded outbox that its own task writes out, so a
    slow browser never holds up the others (too slow, it is closed and catches up later)."""

    def __init__(self, ws: web.WebSocketResponse, limit: int) -> None:
        self.ws, self.limit = ws, limit
        self.outbox: deque[str] = deque()
        self.ready = asyncio.Event()
        self.closed = False

    def send(self, frame: str) -> None:
        if self.closed:
            return
        if len(self.outbox) >= self.limit:
            self.closed = True  # it reconnects and catches up from the log
        else:
            self.outbox.append(frame)
        self.ready.set()

    async def write(self) -> None:
        while not self.closed or self.outbox:
            await self.ready.wait()
            self.ready.clear()
            if self.closed:
                break
            while self.outbox:
                await self.ws.send_str(self.outbox.popleft())
        await self.ws.close(message=b"too slow: reconnect to catch up")


@attrs.define
class _Waiting:
    """Something a person must act on: its description for the page and the agent's future."""

    data: dict[str, Any]
    future: asyncio.Future[Any]
    schema: dict[str, Any] | None = None


class Studio:
    """The web UI of one kernel. ``await studio.start()`` serves it and prints the login URL;
    :func:`attach` does both in one call.

    Events go into a buffer of ``buffer`` events (when full, new ones are dropped and counted);
    a background task sends them to every page and keeps the last ``keep`` for pages that
    reconnect. ``traces`` is a folder of JSONL traces to browse. For the charts, the last
    ``points`` rounds of many-agent runs (never dropped) and samples of the token totals are kept
    apart from the events.
    """

    def __init__(
        self,
        kernel: aopkit.Kernel,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        traces: str | Path | None = None,
        buffer: int = 50_000,
        keep: int = 100_000,
        points: int = 10_000,
        flush: float = 0.05,
        incidents: bool = True,
    ) -> None:
        self.kernel, self.host, self.port = kernel, host, port
        self.token = token or secrets.token_urlsafe(32)
        self.traces = Path(traces) if traces is not None else None
        self.buffer_size, self.flush, self.take_incidents = buffer, flush, incidents
        self.dropped = 0
        self._reported = 0
        self._buffer: deque[Event] = deque()
        self._log: deque[tuple[int, str]] = deque(maxlen=keep)
        self._rounds: deque[dict[str, Any]] = deque(maxlen=points)
        self._tokens: deque[tuple[float, int, int]] = deque(maxlen=points)
        self._seq = 0
        self._wake = asyncio.Event()
        self._clients: set[_Client] = set()
        self._incidents: dict[str, _Waiting] = {}
        self._approvals: dict[str, _Waiting] = {}
        self._inputs: dict[str, _Waiting] = {}
        self._agents: dict[str, Agent] = {}
        self._runner: web.AppRunner | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._name: str | None = None
        self._charted: float = 0  # when the last round the charts were told of ended

    @property
    def url(self) -> str:
        """The login URL (it carries the token: give it only to people who may act)."""
        return f"http://{self.host}:{self.port}/?token={self.token}"

    # -- the kernel's side ------------------------------------------------------------------
    @aopkit.hookimpl
    def event(self, event: Event) -> None:
        if isinstance(event, RoundFinished):  # one a round: the charts never miss it
            self._rounds.append(self.kernel.codec.dump_event(event))
            self._wake.set()
        if len(self._buffer) >= self.buffer_size:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("aopkit studio: event buffer full; dropping events (counted)")
            return
        self._buffer.append(event)
        self._wake.set()

    @aopkit.hookimpl
    def escalate(
        self, incident: Incident | ApprovalRequest
    ) -> Awaitable[Resolution | dict[str, Decision] | None] | None:
        if not self.take_incidents:
            return None
        if isinstance(incident, ApprovalRequest):
            data = {"id": new_id(), **incident.as_data()}
            return self._wait(self._approvals, "approval", data, data["id"])
        return self._wait(
            self._incidents, "incident", attrs.asdict(incident), incident.id, incident.schema
        )

    async def input(self, agent: Agent, msg: Incoming) -> str:
        """A :class:`~aopkit.UserAgent` input source: what a person types in the page."""
        said = [msg] if isinstance(msg, Msg) else list(msg or ())
        prompt = f"{said[-1].name}: {said[-1].text}" if said else ""
        data = {"id": new_id(), "agent": agent.name, "prompt": prompt}
        text: str = await self._wait(self._inputs, "input", data, data["id"])
        return text

    def user_agent(self, name: str = "user", **options: Any) -> aopkit.UserAgent:
        """A user agent whose words are typed in the page (and that the page may interrupt)."""
        agent = aopkit.UserAgent(name, input=self.input, kernel=self.kernel, **options)
        self.watch(agent)
        return agent

    def watch(self, *agents: Agent) -> None:
        """Let the page interrupt these agents."""
        self._agents.update((a.name, a) for a in agents)
        self._control({"kind": "agents", "agents": sorted(self._agents)})

    async def _wait(
        self,
        table: dict[str, _Waiting],
        kind: str,
        data: dict[str, Any],
        key: str,
        schema: dict[str, Any] | None = None,
    ) -> Any:
        data = json.loads(json.dumps(data, default=str))
        waiting = _Waiting(data, asyncio.get_running_loop().create_future(), schema)
        table[key] = waiting
        self._control({"kind": kind, kind: data})
        try:
            return await waiting.future
        finally:
            del table[key]
            self._control({"kind": f"{kind}_closed", "id": key})

    # -- serving ----------------------------------------------------------------------------
    async def start(self) -> str:
        """Serve the page, listen to the kernel's events and incidents; print and return the
        login URL."""
        self._runner = web.AppRunner(self.app(), access_log=None)  # URLs may carry the token
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._name = self.kernel.register(self.hooks(), f"studio-{self.port}")
        self._pump_task = asyncio.create_task(self._pump())
        if not is_loopback(self.host):
            logger.warning("aopkit studio: listening on {}: reachable from the network", self.host)
        print(f"aopkit studio: {self.url}", file=sys.stderr, flush=True)
        return self.url

    def hooks(self) -> object:
        """What :meth:`start` registers in the kernel for its events and incidents."""
        return self

    async def stop(self) -> None:
        """Stop serving; incidents still waiting are declined, typed input is refused."""
        if self._name is not None:
            self.kernel.unregister(self._name)
            self._name = None
        for waiting in (*self._incidents.values(), *self._approvals.values()):
            waiting.future.set_result(None)
        for waiting in self._inputs.values():
            waiting.future.set_exception(aopkit.AopkitError("the Studio stopped before input"))
        if self._pump_task is not None:
            self._pump_task.cancel()
        for client in list(self._clients):
            await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=1 << 20)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/api/incidents/{id}", self._resolve)
        app.router.add_post("/api/approvals/{id}", self._decide)
        app.router.add_post("/api/inputs/{id}", self._type)
        app.router.add_post("/api/agents/{name}/interrupt", self._interrupt)
        app.router.add_get("/api/runs", self._runs)
        app.router.add_get("/api/runs/{name}", self._run)
        app.router.add_get("/api/usage", self._usage)
        app.router.add_get("/api/series", self._series)
        return app

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        candidates = (
            request.cookies.get(self._cookie(request), ""),
            header[7:] if header.startswith("Bearer ") else "",
            request.query.get("token", ""),
        )
        expected = self.token.encode()
        return any(hmac.compare_digest(c.encode(), expected) for c in candidates if c)

    def _cookie(self, request: web.Request) -> str:
        return f"aopkit_studio_{request.url.port}"  # cookies ignore ports: one per Studio

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._authorised(request):
            return web.Response(
                status=401, text="401: open the Studio with the URL printed at start"
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return web.Response(status=403, text=f"403: requests from {origin} are not allowed")
        if "token" in request.query and request.method == "GET" and request.path == "/":
            login = web.Response(status=302, headers={"Location": "/"})  # cookie, not URL
            login.set_cookie(
                self._cookie(request), self.token, httponly=True, samesite="Strict", path="/"
            )
            return login
        response = await handler(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src * data:; media-src * data:; "
            f"connect-src 'self' ws://{request.host}; object-src 'none'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    # -- the live stream --------------------------------------------------------------------
    async def _pump(self) -> None:
        """Serialise buffered events in batches, log them, and hand them to every page."""
        dump = self.kernel.codec.dump_event
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush)  # let a batch gather: one frame per flush
            self._wake.clear()
            while self._buffer:
                lines = []
                for _ in range(min(len(self._buffer), 1000)):
                    event = self._buffer.popleft()
                    self._seq += 1
                    try:
                        data = dump(event)
                    except Exception as exc:
                        data = {"type": event.type, "unserialisable": type(exc).__name__}
                    data["seq"] = self._seq
                    line = self.kernel.secrets.redact(_json(data))
                    self._log.append((self._seq, line))
                    lines.append(line)
                frame = '{"kind":"events","events":[' + ",".join(lines) + "]}"
                for client in list(self._clients):
                    client.send(frame)
                await asyncio.sleep(0)
            if self._sample():
                self._control({"kind": "series"})
            if self.dropped > self._reported:
                logger.warning(
                    "aopkit studio: dropped {} events so far (buffer of {} full)",
                    self.dropped,
                    self.buffer_size,
                )
                self._reported = self.dropped
                self._control({"kind": "dropped", "count": self.dropped})

    def _sample(self) -> bool:
        """Add a point to the token series if the totals moved (or a round ended) since the
        last one; say whether the charts have something new."""
        total = self.kernel.usage.total.usage
        point = (time.time(), total.input_tokens or 0, total.output_tokens or 0)
        last = self._tokens[-1] if self._tokens else (0.0, 0, 0)
        moved = point[1:] != last[1:]
        if moved:
            self._tokens.append(point)
        rounds = len(self._rounds) and self._rounds[-1]["time"]
        fresh = moved or rounds != self._charted
        self._charted = rounds
        return bool(fresh)

    def _control(self, message: dict[str, Any]) -> None:
        frame = self.kernel.secrets.redact(json.dumps(message, ensure_ascii=False))
        for client in list(self._clients):
            client.send(frame)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an event sequence number") from None
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        client = _Client(ws, limit=1000)
        first = self._log[0][0] if self._log else self._seq + 1
        state = json.dumps(self._state(missed=max(0, first - since - 1) if since else 0))
        client.send(self.kernel.secrets.redact(state))
        backlog = [line for seq, line in self._log if seq > since]
        for i in range(0, len(backlog), 1000):
            client.send('{"kind":"events","events":[' + ",".join(backlog[i : i + 1000]) + "]}")
        self._clients.add(client)  # no await since the backlog: nothing missed, nothing twice
        writer = asyncio.create_task(client.write())
        try:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self._clients.discard(client)
            client.closed = True
            client.ready.set()
            await asyncio.gather(writer, return_exceptions=True)
        return ws

    def _state(self, missed: int) -> dict[str, Any]:
        return {
            "kind": "state",
            "incidents": [w.data for w in self._incidents.values()],
            "approvals": [w.data for w in self._approvals.values()],
            "inputs": [w.data for w in self._inputs.values()],
            "agents": sorted(self._agents),
            "dropped": self.dropped,
            "missed": missed,
            "runs": self.traces is not None,
        }

    # -- acting -----------------------------------------------------------------------------
    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        waiting = self._incidents.get(request.match_info["id"])
        if waiting is None or waiting.future.done():
            raise web.HTTPNotFound(text="no such incident is waiting (already resolved?)")
        body = await _json_body(request)
        action = body.get("action")
        if action in ("retry", "abort"):
            waiting.future.set_result(Resolution(action))
            return web.json_response({"ok": True})
        if action != "answer":
            raise web.HTTPBadRequest(text="action must be retry, answer or abort")
        text = body.get("answer")
        if not isinstance(text, str):
            raise web.HTTPBadRequest(text="answer must be the answer's JSON text")
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"the answer is not JSON: {exc}") from None
        if found := problem(value, waiting.schema):
            raise web.HTTPBadRequest(text=f"the answer does not fit the expected schema: {found}")
        waiting.future.set_result(Resolution("answer", text))
        return web.json_response({"ok": True})

    async def _decide(self, request: web.Request) -> web.StreamResponse:
        """A person's decisions on an approval request: ``{"decisions": {call id: {"action":
        "approve" | "reject" | "edit", "reason": ..., "arguments": {...}}}}``, one per call."""
        waiting = self._approvals.get(request.match_info["id"])
        if waiting is None or waiting.future.done():
            raise web.HTTPNotFound(text="no such approval is waiting (already decided?)")
        given = (await _json_body(request)).get("decisions")
        calls = [call["id"] for call in waiting.data["calls"]]
        if not isinstance(given, dict) or sorted(given) != sorted(calls):
            raise web.HTTPBadRequest(text=f"decisions must hold one decision for each of {calls}")
        decisions = {}
        for call, body in given.items():
            if not isinstance(body, dict) or body.get("action") not in (
                "approve",
                "reject",
                "edit",
            ):
                raise web.HTTPBadRequest(text=f"{call}: action must be approve, reject or edit")
            reason, arguments = body.get("reason", ""), body.get("arguments")
            if not isinstance(reason, str):
                raise web.HTTPBadRequest(text=f"{call}: reason must be text")
            if (body["action"] == "edit") != isinstance(arguments, dict):
                raise web.HTTPBadRequest(text=f"{call}: give arguments (an object) with edit only")
            decisions[call] = Decision(body["action"], reason, arguments)
        waiting.future.set_result(decisions)
        return web.json_response({"ok": True})

    async def _type(self, request: web.Request) -> web.StreamResponse:
        waiting = self._inputs.get(request.match_info["id"])
        if waiting is None or waiting.future.done():
            raise web.HTTPNotFound(text="no user agent is waiting for this input")
        text = (await _json_body(request)).get("text")
        if not isinstance(text, str):
            raise web.HTTPBadRequest(text="text must be a string")
        waiting.future.set_result(text)
        return web.json_response({"ok": True})

    async def _interrupt(self, request: web.Request) -> web.StreamResponse:
        agent = self._agents.get(request.match_info["name"])
        if agent is None:
            raise web.HTTPNotFound(text="the Studio does not watch this agent (studio.watch)")
        agent.interrupt()
        return web.json_response({"ok": True})

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        """The kernel's usage totals and budgets (what ``kernel.usage.render()`` prints)."""
        text = json.dumps(self.kernel.usage.as_dict(), ensure_ascii=False)
        return web.Response(text=self.kernel.secrets.redact(text), content_type="application/json")

    async def _series(self, request: web.Request) -> web.StreamResponse:
        """What the charts draw: the rounds kept (with the program's aggregates) and the token
        totals over time."""
        data = {"rounds": list(self._rounds), "tokens": [list(p) for p in self._tokens]}
        return web.Response(
            text=self.kernel.secrets.redact(_json(data)), content_type="application/json"
        )

    # -- past runs --------------------------------------------------------------------------
    async def _runs(self, request: web.Request) -> web.StreamResponse:
        if self.traces is None:
            return web.json_response([])
        files = sorted(self.traces.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
        return web.json_response(
            [
                {"name": p.name, "size": p.stat().st_size, "modified": p.stat().st_mtime}
                for p in files
            ]
        )

    async def _run(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.traces / name if self.traces is not None else None
        if path is None or Path(name).name != name or path.suffix != ".jsonl" or not path.is_file():
            raise web.HTTPNotFound(text="no such trace")
        text = self.kernel.secrets.redact(path.read_text(encoding="utf-8", errors="replace"))
        events, bad = _read_trace(text.splitlines())
        return web.json_response({"events": events, "bad": bad})


def _json(data: Any) -> str:
    """JSON a browser can parse: NaN and infinities (an average of nothing) become null."""
    try:
        return json.dumps(data, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), ensure_ascii=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _read_trace(lines: Iterable[str]) -> tuple[list[Any], int]:
    events, bad = [], 0
    for seq, line in enumerate(lines, 1):
        try:
            data = jsontext.loads(line)  # no NaN the browser could not parse, no stack overflow
        except ValueError:
            bad += 1
            continue
        if isinstance(data, dict):
            events.append({**data, "seq": seq})
        else:
            bad += 1
    return events, bad


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


async def attach(kernel: aopkit.Kernel, **options: Any) -> Studio:
    """Serve a Studio for ``kernel`` (from inside its running event loop) in one call."""
    studio = Studio(kernel, **options)
    await studio.start()
    return studio
