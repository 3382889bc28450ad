"""Where a long run is: rounds, agents that replied, model calls in flight, faults so far.

The figures are counters kept on the kernel (``kernel.progress``) and updated in place by pools
and model calls, not events: showing them must not make a million-agent round build a million
events. :func:`show_progress` draws them as one line on a terminal, redrawn at most ten times a
second, and draws nothing when its output is not a terminal (a log file, a pipe, CI).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from .printable import printable

if TYPE_CHECKING:
    from .kernel import Kernel

REDRAW = 0.1  # seconds between two drawings at most


class Progress:
    """The counters of one kernel. ``view`` is called with them when they change, at most every
    :data:`REDRAW` seconds; with no view an update is an addition and one attribute read."""

    __slots__ = ("_due", "agents", "in_flight", "kernel", "replied", "round", "view")

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.round = 0  # rounds started
        self.agents = 0  # agents asked in the round under way
        self.replied = 0  # of them, how many have answered (or failed)
        self.in_flight = 0  # model calls started and not yet finished
        self.view: Callable[[Progress], None] | None = None
        self._due = 0.0

    def round_started(self, agents: int) -> None:
        """A new round asks ``agents`` agents."""
        self.round += 1
        self.agents, self.replied = agents, 0
        self.changed(now=True)

    def advanced(self, replied: int = 1) -> None:
        """``replied`` more agents of the round have answered."""
        self.replied += replied
        if self.view is not None:
            self.changed()

    @property
    def faults(self) -> int:
        """Faults recorded so far (retried, corrected, critiqued or escalated)."""
        report = self.kernel._faults
        return 0 if report is None else len(report.faults)

    def changed(self, *, now: bool = False) -> None:
        """Let the view draw, if it has not drawn in the last :data:`REDRAW` seconds."""
        view = self.view
        if view is None:
            return
        clock = time.monotonic()
        if now or clock >= self._due:
            self._due = clock + REDRAW
            view(self)

    def line(self) -> str:
        """The counters as one line of text."""
        parts = []
        if self.round:
            done = f"{self.replied:,}/{self.agents:,} replied"
            parts.append(f"round {self.round:,} {_bar(self.replied, self.agents)} {done}")
        parts.append(f"{self.in_flight:,} call{'s' if self.in_flight != 1 else ''} in flight")
        parts.append(f"{self.faults:,} fault{'s' if self.faults != 1 else ''}")
        return " · ".join(parts)


def _bar(done: int, total: int, width: int = 10) -> str:
    eighths = 0 if total <= 0 else min(width * 8, done * width * 8 // total)
    full, part = divmod(eighths, 8)
    rest = "▏▎▍▌▋▊▉"[part - 1] if part else ""
    return "▕" + ("█" * full + rest).ljust(width) + "▏"


class ProgressBar:
    """Draws a kernel's :class:`Progress` on one line of a terminal, in place."""

    def __init__(self, progress: Progress, file: IO[str]) -> None:
        self.progress, self.file = progress, file
        self.shown = False

    def __call__(self, progress: Progress) -> None:
        width = _columns(self.file) - 1  # a wrapped line could not be redrawn in place
        self._write("\r\x1b[K" + printable(progress.line())[:width])
        self.shown = True

    def clear(self) -> None:
        """Take the line away (before other output, and at the end); the next change redraws."""
        if self.shown:
            self.shown = False
            self._write("\r\x1b[K")

    def stop(self) -> None:
        """Stop drawing and clear the line (doing it twice is harmless)."""
        if self.progress.view is self:
            self.progress.view = None
        self.clear()

    def _write(self, text: str) -> None:
        try:
            self.file.write(text)
            self.file.flush()
        except (OSError, ValueError):  # the terminal went away, or the file was closed
            self.progress.view = None


def _columns(file: IO[str]) -> int:
    try:
        return os.get_terminal_size(file.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def is_terminal(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


def show_progress(
    kernel: Kernel | None = None, *, file: IO[str] | None = None
) -> Callable[[], None]:
    """Show ``kernel``'s progress (default: the default kernel's) as a line on ``file``
    (default: ``sys.stderr``) that redraws in place; nothing is drawn when ``file`` is not a
    terminal. Returns the function that stops it and clears the line."""
    if kernel is None:
        from .kernel import default_kernel

        kernel = default_kernel()
    target = sys.stderr if file is None else file
    progress = kernel.progress
    if isinstance(progress.view, ProgressBar):
        progress.view.stop()
    if not is_terminal(target):
        return lambda: None
    bar = ProgressBar(progress, target)
    progress.view = bar
    bar(progress)
    return bar.stop
