"""The ``aopkit`` command line. Plugins add subcommands through the ``register_commands`` hook."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Sequence
from typing import Any

from .kernel import Kernel


def _plugins(args: Any, kernel: Kernel) -> int:
    """List loaded plugins as JSON: name, version, hooks, and what each registered."""
    json.dump(kernel.plugins(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def build_parser(kernel: Kernel) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="aopkit", description="aopkit: agents that pass messages")
    parser.add_argument(
        "--fault-report",
        action="store_true",
        help="print the fault report (every fault and the tier that resolved it) at the end",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub = subparsers.add_parser("plugins", help=_plugins.__doc__)
    sub.set_defaults(run=_plugins)
    for name, command in kernel.commands.objects.items():
        if name == "plugins":
            continue
        sub = subparsers.add_parser(name, help=command.help)
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None, kernel: Kernel | None = None) -> int:
    kernel = kernel or Kernel()
    parser = build_parser(kernel)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.run(args, kernel)
        if inspect.isawaitable(result):
            result = asyncio.run(_finish(result))
    finally:
        if args.fault_report:
            print(kernel.faults.render())
    return int(result or 0)


async def _finish(awaitable: Any) -> Any:
    return await awaitable


if __name__ == "__main__":
    raise SystemExit(main())
