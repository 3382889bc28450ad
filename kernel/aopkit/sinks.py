"""Event sinks an application may register: the conversation on a terminal
(:func:`show_chat`), the CHAT log (loguru) and a JSONL trace file.

The library adds no loguru sink: ``ChatLog`` logs at the ``CHAT`` level (number 22, defined when
this module is imported); the application decides where it goes, for instance with
``logger.add(sys.stderr, level=22)`` — the number works even before ``import aopkit``, the name
``"CHAT"`` only after.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from .blocks import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .events import Event, MessageSent
from .files import start_on_a_new_line
from .hookspecs import hookimpl
from .message import Msg
from .printable import cell, printable
from .progress import ProgressBar

if TYPE_CHECKING:
    from .kernel import Kernel

CHAT = "CHAT"
CHAT_LEVEL_NO = 22  # above INFO (20), below SUCCESS (25) and WARNING (30)


def chat_level() -> str:
    """Define loguru's ``CHAT`` level once (between INFO and WARNING) and return its name."""
    from loguru import logger

    try:
        logger.level(CHAT)
    except ValueError:
        logger.level(CHAT, no=CHAT_LEVEL_NO, color="<cyan><bold>", icon="💬")
    return CHAT


chat_level()


class ChatLog:
    """Logs the conversation at the ``CHAT`` level: one line per message sent, scrubbed of the
    kernel's secrets."""

    def __init__(self) -> None:
        from loguru import logger

        self._log = logger.log
        self._level = chat_level()

    @hookimpl
    def event(self, event: Event, kernel: Kernel) -> None:
        if isinstance(event, MessageSent):
            line = chat_line(event.msg)
            self._log(self._level, "{}", kernel.secrets.redact(line))


def describe(msg: Msg) -> str:
    """One line for a message: text, thinking, tool calls (→) and tool results (←)."""
    parts = []
    for block in msg.blocks():
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            parts.append(f"(thinking: {block.thinking})")
        elif isinstance(block, ToolUseBlock):
            args = block.raw_input if block.raw_input is not None else json.dumps(block.input)
            parts.append(f"→ {block.name}({args})")
        elif isinstance(block, ToolResultBlock):
            out = (
                block.output
                if isinstance(block.output, str)
                else Msg("", block.output, "user").text
            )
            parts.append(f"← {block.name}{' failed' if block.is_error else ''}: {out}")
        else:
            parts.append(f"[{block.type}]")
    return " ".join(parts)


def chat_line(msg: Msg) -> str:
    """``name: what was said`` for a terminal: the name on one short line, and no control
    character of a program or a model reaches the terminal."""
    return f"{cell(msg.name)}: {printable(describe(msg))}"


SHOW_CHAT = "aopkit-show-chat"  # the plugin name show_chat registers its view under


class ChatView:
    """Writes the conversation to a text file as it happens, one line per message: what
    :func:`show_chat` registers. No loguru involved."""

    def __init__(self, kernel: Kernel, file: IO[str]) -> None:
        self.kernel = kernel
        self.file: IO[str] | None = file

    @hookimpl
    def event(self, event: Event, kernel: Kernel) -> None:
        if isinstance(event, MessageSent) and self.file is not None:
            line = chat_line(event.msg)
            bar = kernel.progress.view
            if isinstance(bar, ProgressBar) and bar.file is self.file:
                bar.clear()  # the message goes above the progress line, which redraws below it
            try:
                print(kernel.secrets.redact(line), file=self.file, flush=True)
            except BrokenPipeError:  # the reader went away (``| head``): stop, quietly
                self.file = None

    def stop(self) -> None:
        """Stop showing the conversation (doing it twice is harmless)."""
        if self.kernel.pm.get_plugin(SHOW_CHAT) is self:
            self.kernel.unregister(SHOW_CHAT)


def show_chat(kernel: Kernel | None = None, *, file: IO[str] | None = None) -> Callable[[], None]:
    """Show ``kernel``'s conversation (default: the default kernel's) live on ``file``
    (default: ``sys.stderr`` at the time of the call), one line per message, secrets scrubbed.

    Calling it again only changes the file: each message is shown once. Returns the function
    that stops it."""
    if kernel is None:
        from .kernel import default_kernel

        kernel = default_kernel()
    target = sys.stderr if file is None else file
    view = kernel.pm.get_plugin(SHOW_CHAT)
    if isinstance(view, ChatView):
        view.file = target
    else:
        view = ChatView(kernel, target)
        kernel.register(view, SHOW_CHAT)
    return view.stop


class JsonlTrace:
    """Appends every event to a JSONL file, one JSON object per line, flushed per line, scrubbed
    of the kernel's secrets.

    If a killed process left the file's last line torn, the first event starts a new line, so
    only the torn line is lost (readers skip it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[str] | None = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115
        start_on_a_new_line(self._file.fileno())

    @hookimpl
    def event(self, event: Event, kernel: Kernel) -> None:
        if self._file is not None:
            self._file.write(kernel.secrets.redact(kernel.codec.dumps_event(event)) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
