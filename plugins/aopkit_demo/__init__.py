"""``aopkit demo``: a multi-agent debate that shows tools, the four fault tiers, and the fault
report. Offline by default (a recorded cassette shipped here); ``--model provider:name`` (or
``AOPKIT_DEMO_MODEL``) runs the same script against a real model; ``--studio`` opens the web UI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import aopkit

from .debate import CASSETTE, SCRIPT, StandInHuman, debate

__all__ = ["debate"]


@aopkit.hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register(
        "demo", run, help="a debate that shows tools and the four fault tiers", arguments=_arguments
    )


def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--model",
        default=os.environ.get("AOPKIT_DEMO_MODEL"),
        help="provider:model to use (default: offline, the recorded cassette)",
    )
    parser.add_argument("--studio", action="store_true", help="watch it in the Studio web UI")
    parser.add_argument("--record", metavar="CASSETTE", help=argparse.SUPPRESS)


async def run(args: Any, kernel: aopkit.Kernel) -> int:
    """Run the debate, then print the verdict and the fault report."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stdout, level="CHAT", format="{message}", colorize=False)
    kernel.register(aopkit.ChatLog(), "demo-chat-log")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if args.model:
        model = kernel.model(args.model)
        print(f"Running against {args.model}.")
    elif args.record:  # maintainers: re-record the shipped cassette from SCRIPT
        model = kernel.model(
            "replay:scripted:demo", cassette=args.record, mode="record", responses=list(SCRIPT)
        )
    else:
        model = kernel.model("replay:scripted:demo", cassette=str(CASSETTE), mode="replay")
        print(
            "No model configured: running offline on the cassette recorded with the package "
            "(a scripted model). Use --model provider:name for a real one.\n"
        )
    studio = None
    if args.studio:
        from aopkit_studio import attach

        studio = await attach(kernel, port=0)
        print(f"Studio: {studio.url}\n")
    if not args.model and not (studio is not None and interactive):
        # Offline, the demo plays the person at tier 4 (and says so); with the Studio open on a
        # terminal, the person answers the incident in the page instead.
        kernel.register(StandInHuman(), "demo-human")
    try:
        verdict = await debate(kernel, model)
        print(f"\nVerdict: {verdict.winner} wins — {verdict.reason} (scores {verdict.scores})\n")
        print(kernel.faults.render())
        if studio is not None and interactive:
            await asyncio.to_thread(input, "\nPress Enter to stop the Studio. ")
    finally:
        if studio is not None:
            await studio.stop()
        await kernel.aclose()
    return 0
