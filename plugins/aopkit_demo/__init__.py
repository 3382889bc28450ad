"""``aopkit demo``: a multi-agent debate that shows tools, the four fault tiers, and the fault
report. Offline by default (a recorded cassette shipped here); ``--model provider:name`` (or
``AOPKIT_DEMO_MODEL``) runs the same script against a real model. It takes the flags of
``aopkit run`` (``--studio``, ``--trace``...), which their own plugins provide.
"""

from __future__ import annotations

import argparse
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
        "demo",
        run,
        help="a debate that shows tools and the four fault tiers",
        arguments=_arguments,
        run_options=True,
    )


def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--model",
        default=os.environ.get("AOPKIT_DEMO_MODEL"),
        help="provider:model to use (default: offline, the recorded cassette)",
    )
    parser.add_argument("--record-script", metavar="CASSETTE", help=argparse.SUPPRESS)


async def run(args: Any, kernel: aopkit.Kernel) -> int:
    """Run the debate, then print the verdict and the fault report."""
    from loguru import logger

    from aopkit.cli import console_sink

    logger.remove()
    logger.add(console_sink(sys.stdout), level="CHAT", format="{message}", colorize=False)
    kernel.register(aopkit.ChatLog(), "demo-chat-log")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if args.model:
        model = kernel.model(args.model)
        print(f"Running against {args.model}.")
    elif args.record_script:  # maintainers: re-record the shipped cassette from SCRIPT
        model = kernel.model(
            "replay:scripted:demo",
            cassette=args.record_script,
            mode="record",
            responses=list(SCRIPT),
        )
    else:
        model = kernel.model("replay:scripted:demo", cassette=str(CASSETTE), mode="replay")
        print(
            "No model configured: running offline on the cassette recorded with the package "
            "(a scripted model). Use --model provider:name for a real one.\n"
        )
    if not args.model and not (getattr(args, "studio", False) and interactive):
        # Offline, the demo plays the person at tier 4 (and says so); with the Studio open on a
        # terminal (``--studio``, from the Studio's plugin), the person answers in the page.
        kernel.register(StandInHuman(), "demo-human")
    try:
        verdict = await debate(kernel, model)
    except aopkit.AopkitError:
        print(f"\nNo verdict: the debate failed.\n\n{kernel.faults.render()}")
        raise  # the command line says why in one line and exits with status 1
    finally:
        await kernel.aclose()
    print(f"\nVerdict: {verdict.winner} wins — {verdict.reason} (scores {verdict.scores})\n")
    print(kernel.faults.render())
    return 0
