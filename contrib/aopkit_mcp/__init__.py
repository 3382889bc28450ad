"""Model Context Protocol: the tools of an MCP server, registered into a toolkit.

``async with MCPClient.stdio("uvx", ["some-server"]) as server:
await server.add_tools_to(toolkit)``. Needs the official ``mcp`` package
(``pip install 'aopkit[mcp]'``); it is imported only when a client is made.
"""

from __future__ import annotations

from ._client import MCPClient, MCPNotInstalled, MCPTool
from ._content import MCPError

__all__ = ["MCPClient", "MCPError", "MCPNotInstalled", "MCPTool"]
