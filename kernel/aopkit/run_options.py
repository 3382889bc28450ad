"""The kernel's own flags of ``aopkit run`` (``register_run_options``): ``--chat`` shows the
conversation, ``--progress`` where a long run is, ``--trace FILE`` writes every event as JSONL,
``--usage`` prints the reports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import attrs

from .kernel import Kernel, RunPart


def chat_arguments(parser: Any) -> None:
    parser.add_argument("--chat", action="store_true", help="show the conversation live on stderr")


def start_chat(args: Any) -> RunPart | None:
    return _Chat() if args.chat else None


@attrs.define
class _Chat:
    """``aopkit.show_chat`` on every kernel of the run."""

    stops: list[Callable[[], None]] = attrs.Factory(list)

    def attach(self, kernel: Kernel) -> None:
        from .sinks import show_chat

        self.stops.append(show_chat(kernel, file=sys.stderr))

    def finish(self) -> None:
        for stop in self.stops:
            stop()


def progress_arguments(parser: Any) -> None:
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show rounds, replies, calls in flight and faults on stderr (a terminal only)",
    )


def start_progress(args: Any) -> RunPart | None:
    return _Progress() if args.progress else None


@attrs.define
class _Progress:
    """``aopkit.show_progress`` on every kernel of the run."""

    stops: list[Callable[[], None]] = attrs.Factory(list)

    def attach(self, kernel: Kernel) -> None:
        from .progress import show_progress

        self.stops.append(show_progress(kernel, file=sys.stderr))

    def finish(self) -> None:
        for stop in self.stops:
            stop()


def trace_arguments(parser: Any) -> None:
    parser.add_argument(
        "--trace", metavar="FILE", help="append every event of the run to FILE as JSON lines"
    )


def start_trace(args: Any) -> RunPart | None:
    if not args.trace:
        return None
    from .cli import UsageError
    from .sinks import JsonlTrace

    try:
        return _Trace(JsonlTrace(args.trace))
    except OSError as exc:
        raise UsageError(f"--trace {args.trace}: cannot write it: {exc.strerror}") from None


@attrs.define
class _Trace:
    """One trace file for every kernel of the run, lines in the order events happen."""

    trace: Any

    def attach(self, kernel: Kernel) -> None:
        kernel.register(self.trace, f"aopkit-run-trace-{id(kernel)}")

    def finish(self) -> None:
        self.trace.close()


def usage_arguments(parser: Any) -> None:
    parser.add_argument(
        "--usage", action="store_true", help="print each kernel's usage report at the end"
    )


def start_usage(args: Any) -> RunPart | None:
    return _Usage() if args.usage else None


@attrs.define
class _Usage:
    kernels: list[Kernel] = attrs.Factory(list)

    def attach(self, kernel: Kernel) -> None:
        self.kernels.append(kernel)

    def finish(self) -> None:
        from .cli import usage_report

        for kernel in self.kernels:
            print(usage_report(kernel), file=sys.stderr)
