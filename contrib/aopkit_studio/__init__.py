"""aopkit Studio: a web UI to watch a run live, act on incidents, type as a user agent,
interrupt agents and browse past runs. ``studio = await aopkit_studio.attach(kernel)``, or
``aopkit studio`` on the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aopkit

__all__ = ["Studio", "attach"]


def __getattr__(name: str) -> Any:
    """``Studio`` and ``attach`` load the server (and aiohttp's server side) on first use, so
    loading the plugin for its command costs nothing."""
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'aopkit_studio' has no attribute {name!r}")


@aopkit.hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("studio", _serve, help="serve the Studio web UI", arguments=_arguments)


@aopkit.hookimpl
def register_run_options(register: Callable[..., None]) -> None:
    register("studio", _run_arguments, _start_run)


def _run_arguments(parser: Any) -> None:
    parser.add_argument("--studio", action="store_true", help="watch the run in the Studio")
    parser.add_argument(
        "--port", type=int, default=0, help="the Studio's port (default: any free port)"
    )


def _start_run(args: Any) -> Any:
    """The Studio of ``aopkit run --studio``; the server loads only when asked for."""
    if not args.studio:
        return None
    from .run import StudioRun

    return StudioRun(args.port)


def _arguments(parser: Any) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--traces", default=".", help="folder of JSONL traces to browse")


async def _serve(args: Any, kernel: aopkit.Kernel) -> int:
    """Serve until interrupted (Ctrl-C)."""
    from .server import attach

    studio = await attach(kernel, host=args.host, port=args.port, traces=args.traces)
    try:
        await asyncio.Event().wait()
    finally:
        await studio.stop()
    return 0
