"""Lines typed at the terminal (standard input), read on the event loop.

No thread sits blocked in a read: such a thread holds up the interpreter's exit after Ctrl-C
(``asyncio.run`` waits for it) or crashes it (a daemon thread holding stdin's lock). One reader
serves the whole process, so lines read ahead are never lost between callers.
"""

from __future__ import annotations

import asyncio
import os
import sys


class Lines:
    """The lines of a file descriptor (standard input), read on the event loop: no thread sits
    blocked in a read, so Ctrl-C ends the chat at once, even mid-line."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.pending = b""
        self.ended = False

    async def next(self, prompt: str = "") -> str | None:
        """The next line without its line break, or None once the input has ended."""
        if prompt:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        while b"\n" not in self.pending and not self.ended:
            data = await self._read()
            self.pending += data
            self.ended = not data
        if not self.pending:
            return None
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode("utf-8", "replace").removesuffix("\r")

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self.fd, wake)
        except (OSError, ValueError):  # a regular file or /dev/null: reading never waits
            return self._read_now()
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)
        return self._read_now()

    def _read_now(self) -> bytes:
        try:
            return os.read(self.fd, 65536)
        except OSError:  # closed under us: the input has ended
            return b""


_stdin = Lines(0)


async def read_line(prompt: str = "") -> str | None:
    """The next line of standard input (``prompt`` written first), or None at its end."""
    return await _stdin.next(prompt)


async def ask(prompt: str) -> str:
    """Like :func:`input`, for coroutines: the next line, or :class:`EOFError` at the end."""
    line = await read_line(prompt)
    if line is None:
        raise EOFError("end of input")
    return line
