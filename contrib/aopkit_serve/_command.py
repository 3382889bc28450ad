"""``aopkit serve MODULE:OBJECT``: serve a program's agents until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from typing import Any

import aopkit
from aopkit.cli import UsageError
from aopkit.cli_run import load_object
from aopkit.net import is_loopback

PROG = "aopkit serve"
TOKEN_VARIABLE = "AOPKIT_SERVE_TOKEN"
DEFAULT_STORE = "aopkit-serve.sqlite3"


def arguments(parser: Any) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:OBJECT",
        help="an agent, a list of agents, or a callable returning either (once per "
        "conversation); MODULE may be a FILE.py",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument(
        "--token",
        help=f"the bearer token clients send (default: ${TOKEN_VARIABLE}, else one is made "
        "and printed); required beyond loopback",
    )
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help=f"SQLite file of the conversations' state (default: ./{DEFAULT_STORE})",
    )
    parser.add_argument(
        "--protocol",
        action="append",
        dest="protocols",
        metavar="NAME",
        help="serve only this protocol (repeatable; default: openai, a2a, mcp and agui)",
    )
    parser.add_argument(
        "--private-media",
        action="store_true",
        help="fetch clients' media URLs from private and loopback addresses too (default: "
        "public addresses only, so a client cannot make the server fetch from its network)",
    )


async def serve(args: Any, kernel: aopkit.Kernel) -> int:
    """Serve until SIGINT or SIGTERM, then stop cleanly (exit status 0)."""
    from aiohttp import web

    from ._app import PROTOCOLS, SERVICE, build_app

    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token and not is_loopback(args.host):
        raise UsageError(
            f"{PROG}: binding {args.host} (beyond loopback) needs --token or ${TOKEN_VARIABLE}"
        )
    made = not token
    token = token or secrets.token_urlsafe(32)
    target = load_object(args.target, PROG)
    app = build_app(
        target,
        token=token,
        store=aopkit.SQLiteStore(args.store),
        protocols=args.protocols or PROTOCOLS,
        private_media=args.private_media,
    )
    served = app[SERVICE].kernel
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc}") from None
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        print(f"{PROG}: {', '.join(app[SERVICE].names())} at http://{host}:{port}/", flush=True)
        if made:
            print(f"{PROG}: token {token}", flush=True)
        await _until_stopped()
        print(f"{PROG}: stopped", file=sys.stderr, flush=True)
    finally:
        await runner.cleanup()
        await served.aclose()
    return 0


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
