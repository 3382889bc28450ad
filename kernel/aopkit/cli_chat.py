"""``aopkit chat PROVIDER:MODEL``: a conversation with a model in the terminal, its answers
streamed as they come, tools from modules, the fault and usage reports on exit."""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

from .blocks import ToolResultBlock, ToolUseBlock
from .cli import UsageError, discard, usage_report, wrong_usage
from .cli_run import import_module
from .errors import AopkitError
from .events import Event, MessageSent, ModelCallStarted, ReplyChunk
from .hookspecs import hookimpl
from .kernel import Kernel
from .message import Msg
from .printable import printable
from .sinks import chat_line
from .terminal import read_line
from .toolkit import Tool, Toolkit

AGENT = "assistant"
PROG = "aopkit chat"


def arguments(parser: Any) -> None:
    parser.add_argument("model", metavar="PROVIDER:MODEL", help="the model to talk to")
    parser.add_argument("--system", metavar="TEXT", help="the system prompt")
    parser.add_argument(
        "--tools",
        metavar="MODULE",
        action="append",
        default=[],
        help="a module (or FILE.py) whose @tool functions and Toolkits the model may call; "
        "repeat for more",
    )


async def run(args: Any, kernel: Kernel) -> int:
    """Talk to a model in the terminal; Ctrl-D (end of input) or Ctrl-C ends the chat."""
    from .react import ReActAgent

    try:
        model = kernel.model(args.model)
        tools = [found for module in args.tools for found in tools_in(import_module(module, PROG))]
        agent = ReActAgent(
            AGENT,
            model,
            toolkit=Toolkit(tools, kernel=kernel),
            sys_prompt=args.system,
            stream=model.capabilities.streaming,
            kernel=kernel,
        )
    except UsageError:
        raise
    except AopkitError as exc:  # an unknown provider, a bad option
        raise UsageError(f"{PROG}: {exc}") from exc
    screen = _Screen(sys.stdout)
    kernel.register(screen, "aopkit-chat-screen")
    prompt = "you> " if os.isatty(0) else ""
    failed = False
    report = True  # not after a refused key: the one line saying so is the whole story
    try:
        while (line := await read_line(prompt)) is not None:
            if not line.strip():
                continue
            try:
                reply = await agent(Msg("user", line, "user"))
            except AopkitError as exc:
                screen.end_line()
                if wrong_usage(exc):
                    report = False
                    raise
                print(kernel.secrets.redact(f"aopkit chat: error: {exc}"), file=sys.stderr)
                failed = True
                continue
            screen.finish(reply.text)
            if screen.closed:
                raise BrokenPipeError("the reader closed standard output")
    finally:
        screen.end_line()
        if report:
            print(usage_report(kernel), file=sys.stderr)
        await kernel.aclose()
    return 1 if failed else 0


def tools_in(module: ModuleType) -> list[Tool]:
    """The module's ``@tool`` functions and the tools of its ``Toolkit`` attributes."""
    found: dict[str, Tool] = {}
    for value in vars(module).values():
        tools = value.tools.values() if isinstance(value, Toolkit) else [value]
        found.update((t.name, t) for t in tools if isinstance(t, Tool))
    if not found:
        raise UsageError(f"{PROG}: module {module.__name__!r} has no @tool or Toolkit")
    return list(found.values())


class _Screen:
    """Writes the assistant's words as they stream in (each ``reply_chunk`` is the whole text
    so far: only what is new is written). If the reader closes the pipe, the rest is dropped
    and ``closed`` says so: the chat then ends quietly."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.shown = ""  # the text of the current model call written so far
        self.open = False  # a line is being written
        self.closed = False

    @hookimpl
    def event(self, event: Event, kernel: Kernel) -> None:
        if isinstance(event, ModelCallStarted):
            self.end_line()  # a new call (after a tool step) streams its text from the start
        elif isinstance(event, ReplyChunk) and event.agent == AGENT:
            self._show(event.text)
        elif isinstance(event, MessageSent) and _tool_step(event.msg):
            self.end_line()  # a tool step: its calls (→) and their results (←) on a line
            self._write(kernel.secrets.redact(f"  {chat_line(event.msg)}\n"))

    def _show(self, text: str) -> None:
        if not text.startswith(self.shown):
            self.end_line()
        self._write(text[len(self.shown) :])
        self.shown, self.open = text, bool(text) or self.open

    def finish(self, text: str) -> None:
        """The reply is complete: write whatever did not stream, and end its line."""
        if not (self.shown and text.startswith(self.shown)):
            self.end_line()
        self._show(text)
        self.end_line()

    def end_line(self) -> None:
        if self.open:
            self._write("\n")
        self.open, self.shown = False, ""

    def _write(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.out.write(printable(text))  # streamed model text, control characters escaped
            self.out.flush()
        except BrokenPipeError:
            self.closed = True
            discard(self.out)


def _tool_step(msg: Msg) -> bool:
    return any(isinstance(b, (ToolUseBlock, ToolResultBlock)) for b in msg.blocks())
