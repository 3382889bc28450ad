"""Utility tools for agents: Python code execution, SQLite queries and workspace files.

Use them from Python (``Toolkit([*Workspace("data").tools(), ...])``), or add the ones this
plugin registers (``toolkit.add_registered("read_file")``): those are safe by default. Code
execution is off unless ``AOPKIT_ENABLE_CODE_EXECUTION=1``; the files (at ``AOPKIT_WORKSPACE``)
and the database (``AOPKIT_DATABASE``) are read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .database import Database
from .errors import (
    ExecutionFailed,
    FileToolError,
    NotEnabled,
    PathRefused,
    QueryError,
    SandboxUnavailable,
    ToolsError,
)
from .execution import CodeExecutor, Execution, Sandbox
from .files import Workspace

__all__ = [
    "CodeExecutor",
    "Database",
    "Execution",
    "ExecutionFailed",
    "FileToolError",
    "NotEnabled",
    "PathRefused",
    "QueryError",
    "Sandbox",
    "SandboxUnavailable",
    "ToolsError",
    "Workspace",
]


@aopkit.hookimpl
def register_tools(register: Callable[[str, Any], None]) -> None:
    for source in (CodeExecutor(), Database(), Workspace()):
        for tool in source.tools():
            register(tool.name, tool)
