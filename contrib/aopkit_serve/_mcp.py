"""MCP at ``/mcp`` (streamable HTTP): each served agent is a tool, and so is each tool of the
served toolkits.

The ``mcp`` package's session manager speaks ASGI, and our server is aiohttp: the handler here
hands it each request as an ASGI scope and relays what it sends back, so sessions, SSE streams,
resumption headers and ``DELETE`` stay the SDK's own work. The manager's task group is anyio's
and must be left by the task that entered it, so one task of its own holds it for the app's
life.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import mcp.types as types
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

import aopkit
from aopkit import Block, TextBlock, ToolUseBlock

from ._asgi import call_asgi
from ._service import Service

SESSION_HEADER = "mcp-session-id"
INVALID_PARAMS = -32602


def setup(app: web.Application, service: Service) -> None:
    tools = _Tools(service)
    manager = StreamableHTTPSessionManager(
        Server(
            "aopkit",
            on_list_tools=tools.list_tools,
            on_call_tool=tools.call_tool,
        )
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        return await call_asgi(manager.handle_request, request)

    async def running(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        started = asyncio.get_running_loop().create_future()

        async def hold() -> None:
            async with manager.run():
                started.set_result(None)
                await stop.wait()

        holder = asyncio.ensure_future(hold())
        await asyncio.wait({started, holder}, return_when=asyncio.FIRST_COMPLETED)
        if holder.done():
            holder.result()  # it failed to start: say why
        try:
            yield
        finally:
            stop.set()
            await holder
            _stop_sse_watcher()

    app.router.add_route("*", "/mcp", handle)
    app.cleanup_ctx.append(running)


class _Tools:
    """The MCP tools: the served agents, then the toolkits' tools (under their own names)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.toolkits: dict[str, aopkit.Toolkit] = {}
        for toolkit in service.toolkits:
            for spec in toolkit.specs():
                if spec.name in self.toolkits or spec.name in service.names():
                    raise aopkit.ConfigurationError(
                        f"serve (MCP): two tools would be named {spec.name!r}: an agent's or "
                        "another toolkit's name; rename one"
                    )
                self.toolkits[spec.name] = toolkit
        self.tools = [_agent_tool(name, service.describe(name)) for name in service.names()]
        self.tools += [
            types.Tool(name=s.name, description=s.description, input_schema=s.parameters)
            for toolkit in service.toolkits
            for s in toolkit.specs()
        ]

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)

    async def call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        if params.name in self.service.names():
            return await self._ask(params.name, arguments, _session_of(ctx))
        toolkit = self.toolkits.get(params.name)
        if toolkit is None:
            raise MCPError(INVALID_PARAMS, f"unknown tool {params.name!r}")
        use = ToolUseBlock(f"mcp-{ctx.request_id}", params.name, arguments)
        result = await toolkit.call(use, kernel=self.service.kernel)
        content = _content(result.output, self.service.kernel.codec)
        return types.CallToolResult(content=content, is_error=result.is_error)

    async def _ask(
        self, name: str, arguments: dict[str, Any], session: str | None
    ) -> types.CallToolResult:
        """One turn of agent ``name``: the reply's text, and the conversation it belongs to."""
        message, conversation = arguments.get("message"), arguments.get("conversation", session)
        if not isinstance(message, str) or not isinstance(conversation, (str, type(None))):
            return _error(
                f"{name}: 'message' must be a string and 'conversation', if given, a string"
            )
        try:
            async with self.service.conversation(conversation) as conv:
                reply = await conv.agent(name)(aopkit.Msg("user", message, "user"))
        except Exception as exc:  # the client gets an error result; the server goes on
            scrub = self.service.kernel.secrets.redact
            return _error(scrub(f"{name} failed: {type(exc).__name__}: {exc}"))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=reply.text)],
            structured_content={"reply": reply.text, "conversation": conv.id},
        )


def _agent_tool(name: str, description: str) -> types.Tool:
    return types.Tool(
        name=name,
        description=description,
        input_schema={
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": f"What to say to {name}."},
                "conversation": {
                    "type": "string",
                    "description": "The conversation to continue (default: this MCP session's).",
                },
            },
            "required": ["message"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {
                "reply": {"type": "string"},
                "conversation": {"type": "string"},
            },
            "required": ["reply", "conversation"],
        },
    )


def _stop_sse_watcher() -> None:
    """sse-starlette (the SDK's SSE) starts a task on the loop that polls for a uvicorn shutdown
    and never ends by itself: left running it outlives the app (and is destroyed pending when
    the loop closes). Under aiohttp it has nothing to watch; the next stream starts it again."""
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if (
            getattr(coro, "__qualname__", "") == "_shutdown_watcher"
            and frame is not None
            and frame.f_globals.get("__name__") == "sse_starlette.sse"
        ):
            task.cancel()


def _session_of(ctx: Any) -> str | None:
    """The MCP session of the request, which is the conversation when the call names none."""
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None)
    return None if headers is None else headers.get(SESSION_HEADER)


def _content(output: str | list[Block], codec: aopkit.Codec) -> list[types.ContentBlock]:
    """A tool's output as MCP content: text stays text, other blocks go as their JSON."""
    blocks = [TextBlock(output)] if isinstance(output, str) else output
    return [
        types.TextContent(type="text", text=b.text if isinstance(b, TextBlock) else codec.dumps(b))
        for b in blocks
    ]


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
