"""The client: one MCP session, kept by a task of its own, and the tools it offers.

The SDK is built on anyio: its transports must be left by the task that entered them, and a
failing transport cancels that task. So a private task owns the transport and the session, and
calls only exchange messages with it: the agent's tasks can neither break the session nor be
cancelled by a transport that dies. Every request is raced against that task and a timeout, so
a dead or hung server gives an error instead of a hang; the next call after a lost connection
reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aopkit import Block, DecodeError, Tool, Toolkit
from aopkit.models import ToolSpec
from aopkit.secret import Secrets
from aopkit.toolkit import ToolError

from ._content import MCPError, output, parameters, tool_name

if TYPE_CHECKING:
    from aopkit import Kernel

Opener = Callable[["MCPClient", AsyncExitStack], Awaitable[tuple[Any, Any]]]
CLOSE_GRACE = 10.0  # seconds a session gets to close politely before it is cancelled
MAX_PAGES = 100  # tools/list pages: a server that keeps paginating is cut off here
CONNECTION_CLOSED = -32000  # the JSON-RPC code the SDK gives a dropped connection


class MCPNotInstalled(MCPError, ImportError):
    """The ``mcp`` package is missing."""


@functools.cache
def _sdk() -> SimpleNamespace:
    """The parts of the ``mcp`` package used here, imported on first use (mcp 1.x and 2.x)."""
    try:
        import anyio
        import mcp
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared import exceptions
        from mcp.shared._httpx_utils import create_mcp_http_client
    except ImportError as exc:
        raise MCPNotInstalled(
            f"MCP support needs the 'mcp' package ({exc}); install it with "
            "pip install 'aopkit[mcp]'"
        ) from None
    return SimpleNamespace(
        anyio=anyio,
        ClientSession=mcp.ClientSession,
        StdioServerParameters=mcp.StdioServerParameters,
        PaginatedRequestParams=mcp.types.PaginatedRequestParams,
        Error=vars(exceptions).get("MCPError") or vars(exceptions)["McpError"],  # 2.x or 1.x
        stdio_client=stdio_client,
        http_client=create_mcp_http_client,
        streamable_http_client=streamable_http_client,
    )


class _Connection:
    """One session and the task that owns it."""

    def __init__(self, anyio: Any) -> None:
        self.session: Any = None
        self.closing = asyncio.Event()
        self.scope = anyio.CancelScope()  # cancels the owner without defeating SDK shields
        self.error: BaseException | None = None
        self.task: asyncio.Task[None]


class MCPClient:
    """A connection to one MCP server; make one with :meth:`stdio` or :meth:`http`.

    ``timeout`` bounds each call (a server that does not answer in time gives an error
    result), ``connect_timeout`` the start and handshake. The name in error messages is
    ``name``, else the name the server reports.
    """

    def __init__(
        self,
        name: str,
        opener: Opener,
        *,
        named: bool = False,
        timeout: float = 60.0,
        connect_timeout: float = 60.0,
        hide: str | None = None,
        hint: str = "",
    ) -> None:
        self._sdk = _sdk()
        self.name = name
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._open = opener
        self._named = named
        self._hide = hide  # a URL that may carry credentials: never shown in messages
        self._headers: dict[str, str] = {}  # credentials sent to an HTTP server, to scrub
        self.secrets = Secrets()  # what the server must not get back into text: headers, URL
        self._hint = hint  # where to look when the server cannot be reached
        self._refused: str | None = None  # the last HTTP error status, which the SDK drops
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._failures = 0  # failed connection attempts: waiters see one that failed meanwhile
        self._failure = ""  # why the last attempt failed
        self._closed = False

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        errlog: IO[str] | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 60.0,
    ) -> MCPClient:
        """A server run as a subprocess speaking MCP on its stdin and stdout. ``env`` is added
        to a minimal inherited environment (PATH, HOME...); the server's stderr goes to
        ``errlog`` (default: ours)."""
        sdk = _sdk()
        server = sdk.StdioServerParameters(
            command=command, args=list(args), env=None if env is None else dict(env), cwd=cwd
        )

        async def opener(self: MCPClient, stack: AsyncExitStack) -> tuple[Any, Any]:
            streams = await stack.enter_async_context(
                sdk.stdio_client(server, errlog if errlog is not None else sys.stderr)
            )
            return streams[0], streams[1]

        return cls(
            name or os.path.basename(command),
            opener,
            named=name is not None,
            timeout=timeout,
            connect_timeout=connect_timeout,
            hint="; the server's error output may say why",
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 60.0,
    ) -> MCPClient:
        """A server reached over streamable HTTP at ``url``; ``headers`` (say, a bearer token)
        go with every request and never into messages."""
        sdk = _sdk()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MCPError(
                "an MCP server URL needs http:// or https:// and a host; got scheme "
                f"{parts.scheme!r} and host {parts.hostname or ''!r}"
            )
        port = f":{parts.port}" if parts.port else ""
        shown = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        sent = dict(headers or {})

        async def opener(self: MCPClient, stack: AsyncExitStack) -> tuple[Any, Any]:
            client = await stack.enter_async_context(sdk.http_client(headers=sent))
            client.event_hooks["response"].append(self._note)
            streams = await stack.enter_async_context(
                sdk.streamable_http_client(url, http_client=client)
            )
            return streams[0], streams[1]

        client = cls(
            name or shown,
            opener,
            named=name is not None,
            timeout=timeout,
            connect_timeout=connect_timeout,
            hide=url if url != shown else None,
        )
        client._headers = sent
        client.secrets.add_headers(sent)
        client.secrets.add_url(url)
        return client

    def __repr__(self) -> str:
        return f"<MCPClient {self.name!r}>"

    async def __aenter__(self) -> MCPClient:
        await self._live(f"MCP server {self.name!r}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the session and stop the server process (or HTTP session); calls made after
        this give an error."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._stop(conn)

    async def list_tools(self) -> list[dict[str, Any]]:
        """The server's tools, as the protocol describes them (``name``, ``description``,
        ``inputSchema``...)."""
        where = f"MCP server {self.name!r}, listing tools"
        conn = await self._live(where)
        tools: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_PAGES):
            asked = (
                conn.session.list_tools()
                if cursor is None
                else conn.session.list_tools(params=self._sdk.PaginatedRequestParams(cursor=cursor))
            )
            page = _wire(await self._request(conn, where, asked))
            tools.extend(page.get("tools", ()))
            cursor = page.get("nextCursor")
            if cursor is None:
                return tools
        raise MCPError(f"{where}: more than {MAX_PAGES} pages of tools; giving up")

    async def add_tools_to(
        self, toolkit: Toolkit, *, prefix: str | None = None, group: str | None = None
    ) -> list[MCPTool]:
        """Add every tool of the server to ``toolkit`` (named ``prefix_name`` with a prefix,
        in ``group`` if given). Nothing is added unless all of them can be."""
        made = [
            MCPTool(self, spec, name=tool_name(str(spec.get("name")), prefix), group=group)
            for spec in await self.list_tools()
        ]
        names = [t.name for t in made]
        clash = sorted({n for n in names if n in toolkit.tools or names.count(n) > 1})
        if clash:
            raise ToolError(
                f"MCP server {self.name!r}: tool names {clash} are already taken in the "
                "toolkit (or collide among themselves); pass another prefix"
            )
        for one in made:
            toolkit.add(one)
        # every kernel whose agents use the toolkit scrubs them from its sinks
        toolkit.keep_secret(headers=self._headers, url=self._hide)
        return made

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> str | list[Block]:
        """Call a tool of the server. Raises :class:`MCPError` naming the server and the tool
        when the call fails for any reason, the tool's own failures included."""
        where = f"MCP server {self.name!r}, tool {tool!r}"
        conn = await self._live(where)
        result = _wire(
            await self._request(conn, where, conn.session.call_tool(tool, dict(arguments)))
        )
        if self.secrets:  # a server that echoes its credentials back gets them masked
            result = json.loads(self.secrets.redact(json.dumps(result)))
        value, text = output(result)
        if result.get("isError"):
            raise MCPError(f"{where} failed: {text or 'the server gave no details'}")
        return value

    async def _live(self, where: str) -> _Connection:
        """The open connection: made on first use, and made again after it was lost."""
        if self._closed:
            raise MCPError(f"{where}: the client is closed")
        conn = self._conn
        if conn is not None and not conn.task.done():
            return conn
        failures = self._failures
        async with self._lock:
            if self._conn is not None and self._conn.task.done():
                await self._drop(self._conn)
            if self._conn is None and failures != self._failures:
                raise MCPError(f"{where}: {self._failure}")  # failed just now: do not wait again
            if self._conn is None:
                try:
                    self._conn = await self._connect()
                except MCPError as exc:
                    self._failures += 1
                    self._failure = str(exc)
                    raise MCPError(f"{where}: {exc}") from None
            return self._conn

    async def _connect(self) -> _Connection:
        conn = _Connection(self._sdk.anyio)
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.task = asyncio.create_task(self._own(conn, ready), name=f"mcp {self.name}")
        try:
            info = await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
        except asyncio.TimeoutError:
            await self._stop(conn, polite=False)
            raise MCPError(
                "the server did not start and complete the MCP handshake "
                f"within {self.connect_timeout:g} s"
            ) from None
        except Exception as exc:
            await self._stop(conn)
            raise MCPError(f"could not connect ({self._reason(exc)}){self._hint}") from None
        except BaseException:
            await self._stop(conn, polite=False)
            raise
        if not self._named:
            self.name = str(_wire(info).get("serverInfo", {}).get("name") or self.name)
        return conn

    async def _own(self, conn: _Connection, ready: asyncio.Future[Any]) -> None:
        """The owner task: open, hand the session over, and hold it until told to close."""
        try:
            with conn.scope:
                async with AsyncExitStack() as stack:
                    read, write = await self._open(self, stack)
                    session = await stack.enter_async_context(self._sdk.ClientSession(read, write))
                    info = await session.initialize()
                    conn.session = session
                    ready.set_result(info)
                    await conn.closing.wait()
        except Exception as exc:  # the transport failed: callers learn it from `ready` or here
            conn.error = exc
            if not ready.done():
                ready.set_exception(exc)
        if not ready.done():
            ready.cancel()

    async def _request(self, conn: _Connection, where: str, asked: Awaitable[Any]) -> Any:
        """Await one request, unless the connection dies or the timeout runs out first."""
        call = asyncio.ensure_future(asked)
        call.add_done_callback(_settle)
        try:
            done, _ = await asyncio.wait(
                (call, conn.task), timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            call.cancel()  # no-op when it finished; else abandon it (timeout, death, our cancel)
        if call in done and not call.cancelled():
            failure = call.exception()
            if failure is None:
                return call.result()
            if isinstance(failure, self._sdk.Error) and failure.error.code != CONNECTION_CLOSED:
                raise MCPError(
                    f"{where}: the server answered with error {failure.error.code}: "
                    f"{self._reason(failure)}"
                )
            reason = self._reason(failure)
        elif conn.task.done() or call in done:
            reason = self._reason(conn.error) if conn.error else "the session ended"
        else:
            raise MCPError(
                f"{where}: no answer within {self.timeout:g} s (the server may be hung); "
                "the call was abandoned"
            )
        await self._drop(conn)
        after = "the client is closed" if self._closed else "the next call reconnects"
        raise MCPError(f"{where}: the connection was lost ({reason}); {after}")

    async def _drop(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None
        await self._stop(conn)

    async def _stop(self, conn: _Connection, polite: bool = True) -> None:
        """Close politely (the SDK then ends the process or HTTP session), cancel if that
        takes too long; the SDK shields and bounds its own clean-up."""
        conn.closing.set()
        if polite:
            await asyncio.wait((conn.task,), timeout=CLOSE_GRACE)
        if not conn.task.done():
            conn.scope.cancel()
            await asyncio.wait((conn.task,))

    async def _note(self, response: Any) -> None:
        if response.status_code >= 400 and response.request.method == "POST":
            self._refused = f"HTTP {response.status_code} {response.reason_phrase}"

    def _reason(self, exc: BaseException) -> str:
        """What went wrong (with the HTTP status that caused it), URL credentials hidden."""
        text = self._describe(exc)
        refused, self._refused = self._refused, None
        if refused and refused not in text:
            text = f"{text}: {refused}"
        text = text if self._hide is None else text.replace(self._hide, self.name)
        return self.secrets.redact(text)

    def _describe(self, exc: BaseException) -> str:
        inner = getattr(exc, "exceptions", None)  # the innermost errors of a task group
        if inner:
            return "; ".join(self._describe(e) for e in inner)
        return str(exc) if isinstance(exc, self._sdk.Error) else f"{type(exc).__name__}: {exc}"


class MCPTool(Tool):
    """A tool of an MCP server: the server's JSON schema is its parameters, and a call goes to
    the server. Failures come back as error results naming the server and the tool."""

    def __init__(
        self,
        client: MCPClient,
        remote: Mapping[str, Any],
        *,
        name: str,
        group: str | None = None,
    ) -> None:
        self.client = client
        self.remote_name = str(remote.get("name"))

        async def call(**arguments: Any) -> str | list[Block]:
            return await client.call(self.remote_name, arguments)

        description = remote.get("description") or remote.get("title") or ""
        super().__init__(call, name=name, description=str(description), group=group)
        where = f"MCP server {client.name!r}, tool {self.remote_name!r}"
        self.parameters = parameters(where, remote.get("inputSchema"))
        self.spec = ToolSpec(self.name, self.description, self.parameters)

    def __repr__(self) -> str:
        return f"<MCPTool {self.name} of {self.client.name!r}>"

    def arguments(self, given: Mapping[str, Any], kernel: Kernel) -> dict[str, Any]:
        """Check the object shape, required names and, if the schema closes it, unknown names;
        the server checks the values."""
        out = super().arguments(given, kernel)
        known = self.parameters["properties"]
        if self.parameters.get("additionalProperties") is False:
            for key in out:
                if key not in known:
                    raise DecodeError(key, f"unexpected argument; expected {sorted(known)}")
        return out


def _wire(value: Any) -> dict[str, Any]:
    """An SDK result as the protocol's JSON, the same for mcp 1.x and 2.x."""
    dumped: dict[str, Any] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _settle(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned request's outcome as seen, so asyncio does not log it."""
    if not task.cancelled():
        task.exception()
