"""A real MCP server for the tests, written with the SDK's server API.

``python server.py`` serves over stdio; ``python server.py http FD`` serves streamable HTTP on
the listening socket the test passed as file descriptor FD (bound to 127.0.0.1 by the test, so
there is no race for a port). Over HTTP every request must carry ``Authorization: Bearer
sesame``. If the file named by ``BROKEN_FLAG`` exists, the server refuses to start.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Any

import anyio
import mcp.types as types

try:
    from mcp.server.mcpserver import MCPServer  # mcp 2
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:
    from mcp.server.fastmcp import FastMCP as MCPServer  # mcp 1
    from mcp.server.fastmcp.exceptions import ToolError

# a 1x1 PNG and a few bytes standing in for audio
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d4944415478da63f8cfc0f01f0005000201a5f0d6e10000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(b"RIFF....WAVEfmt ").decode()

server = MCPServer("testbench")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the given reason."""
    raise ToolError(reason)


@server.tool()
def picture():  # type: ignore[no-untyped-def]  # no return type: plain (unstructured) content
    """A caption, a tiny image and a sound."""
    return [
        types.TextContent(type="text", text="a red dot"),
        types.ImageContent(type="image", data=PNG, mimeType="image/png"),
        types.AudioContent(type="audio", data=WAV, mimeType="audio/wav"),
    ]


@server.tool()
def weather(city: str) -> dict[str, Any]:
    """Structured output: the weather in a city."""
    return {"city": city, "celsius": 21}


@server.tool(name="files.read")
def read_file(path: str) -> str:
    """A tool whose MCP name some model providers would reject."""
    return f"contents of {path}"


@server.tool()
async def hang() -> str:
    """Never answers."""
    await anyio.sleep(3600)
    return "unreachable"


@server.tool()
def pid() -> int:
    """The server's process id, so the test can check the process is gone."""
    return os.getpid()


@server.tool()
def secret_env() -> str:
    """The value of SECRET_TOKEN, to show the client's env reaches the server."""
    return os.environ.get("SECRET_TOKEN", "")


def http(fd: int) -> None:
    import uvicorn

    app = server.streamable_http_app()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", ()))
        if scope["type"] == "http" and headers.get(b"authorization") != b"Bearer sesame":
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no entry"})
            return
        await app(scope, receive, send)

    uvicorn.run(guarded, fd=fd, log_level="warning", lifespan="on")


if __name__ == "__main__":
    if os.path.exists(os.environ.get("BROKEN_FLAG", "/nonexistent")):
        sys.exit("testbench: refusing to start (broken flag set)")
    if sys.argv[1:2] == ["http"]:
        http(int(sys.argv[2]))
    else:
        server.run()
