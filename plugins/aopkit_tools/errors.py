"""The errors the tools raise; the toolkit hands them to the model as error results."""

from __future__ import annotations

import aopkit


class ToolsError(aopkit.AopkitError):
    """Root of the errors of ``aopkit_tools``."""


class NotEnabled(ToolsError):
    """A capability that is off until the program switches it on (code execution, writing)."""


class PathRefused(ToolsError):
    """A path that is malformed or leads outside the workspace."""


class FileToolError(ToolsError):
    """A file operation failed (no such file, not a directory...)."""


class QueryError(ToolsError):
    """An SQL statement failed or was refused."""


class ExecutionFailed(ToolsError):
    """The code ran but did not succeed (an error, a limit, the timeout); the message holds its
    output."""


class SandboxUnavailable(ToolsError):
    """Code execution cannot set up its sandbox here (bubblewrap missing or not working)."""
