"""Runs the Python blocks of a Markdown page, or an example script, the way a reader would.

Each page runs in a fresh interpreter (``-W error::ResourceWarning``) whose sockets may reach
only loopback. Its blocks run in order in one namespace, so a later block may use an earlier
one's names; a block with a top-level ``await`` runs on the page's event loop, as in a notebook
or ``python -m asyncio``. A block after ``<!-- not-run: reason -->`` is only compiled. After
every block and at the end, an aiohttp session nobody closed is a failure, whether or not the
garbage collector would have noticed it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
NOT_RUN = re.compile(r"<!--\s*not-run(?::\s*(?P<reason>.*?))?\s*-->")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
# What a page's stderr must not say: leaks and errors swallowed by destructors or the event loop.
LEAKS = (
    "Unclosed",
    "ResourceWarning",
    "Exception ignored",
    "Task was destroyed",
    "exception was never retrieved",
    "was never awaited",
)


class DocError(Exception):
    """A page or block the runner cannot take as written."""


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # the 1-based line of the block's first line of code
    source: str
    run: bool


def blocks(page: Path) -> list[Block]:
    """The ``python`` blocks of a Markdown page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    name = relative(page)
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip() == fence),
            None,
        )
        if end is None:
            raise DocError(f"{name}:{i + 1}: the code block is never closed")
        if opening["info"] in ("python", "py"):
            body = [
                line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end]
            ]
            found.append(Block(name, i + 2, "\n".join(body) + "\n", _runs(lines, i, name)))
        i = end + 1
    return found


def _runs(lines: list[str], fence: int, page: str) -> bool:
    before = next((line for line in reversed(lines[:fence]) if line.strip()), "")
    marker = NOT_RUN.search(before)
    if marker is None:
        return True
    if not (marker["reason"] or "").strip():
        raise DocError(
            f"{page}:{fence + 1}: a not-run block must say why: <!-- not-run: reason -->"
        )
    return False


def relative(path: Path) -> str:
    """A page's name in reports: relative to the repository when inside it."""
    resolved = path.resolve()
    return resolved.relative_to(ROOT).as_posix() if ROOT in resolved.parents else str(resolved)


@dataclass
class Outcome:
    ok: bool
    report: str


def run_page(page: Path, timeout: float = 120) -> Outcome:
    """Run a page's blocks in a fresh interpreter; the report names the page and the block."""
    return _run(
        ["--blocks", json.dumps([asdict(b) for b in blocks(page)])], relative(page), timeout
    )


def run_script(script: Path, *args: str, timeout: float = 120) -> Outcome:
    """Run an example as ``python script args`` under the same guards as a page."""
    return _run(["--script", str(script), *args], relative(script), timeout)


def run_source(source: str, name: str = "snippet.md", timeout: float = 60) -> Outcome:
    """Run one block of code as if it were a page (for testing the runner itself)."""
    block = Block(name, 1, source, True)
    return _run(["--blocks", json.dumps([asdict(block)])], name, timeout)


def _run(args: list[str], name: str, timeout: float) -> Outcome:
    env = {
        key: value
        for key, value in os.environ.items()
        if not re.search(r"KEY|TOKEN|SECRET|PROXY|PASSWORD", key, re.I)
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-W", "error::ResourceWarning", str(Path(__file__)), *args]
        # A session of its own: on a timeout the page's whole process group is killed, servers
        # and other children it started included.
        with subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stderr = process.communicate()[1]
                started = stderr.rpartition("aopkit-docrun: running ")[2].split("\n")[0]
                return Outcome(False, f"{name}: timed out after {timeout}s in {started}")
    shown = stderr.replace("aopkit-docrun: running ", "")
    leaks = [marker for marker in LEAKS if marker in stderr]
    if process.returncode != 0:
        return Outcome(False, f"{name}: failed (exit {process.returncode})\n{shown}")
    if leaks:
        return Outcome(False, f"{name}: stderr reports {', '.join(leaks)}\n{shown}")
    return Outcome(True, stdout)


# --- what runs inside the fresh interpreter ----------------------------------------------------


def _guard_network() -> None:
    """Sockets may reach loopback (and Unix sockets) only; names other than localhost do not
    even resolve."""
    import ipaddress
    import socket

    def loopback(host: object) -> bool:
        if host in (None, "", "localhost", b"localhost"):
            return True
        text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            return ipaddress.ip_address(text.split("%")[0]).is_loopback
        except ValueError:
            return False

    def refuse(host: object) -> OSError:
        return OSError(f"the docs may reach only loopback, not {host!r}")

    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not loopback(host):
            raise refuse(host)
        return resolve(host, *args, **kwargs)

    def guarded(method):  # type: ignore[no-untyped-def]
        def connect(self, address):  # type: ignore[no-untyped-def]
            if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
                raise refuse(address[0])
            return method(self, address)

        return connect

    def guarded_send(method):  # type: ignore[no-untyped-def]
        def sendto(self, data, *flags_and_address):  # type: ignore[no-untyped-def]
            address = flags_and_address[-1]  # sendto(data, address) or (data, flags, address)
            if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
                raise refuse(address[0])
            return method(self, data, *flags_and_address)

        return sendto

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = guarded(socket.socket.connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded(socket.socket.connect_ex)  # type: ignore[method-assign]
    socket.socket.sendto = guarded_send(socket.socket.sendto)  # type: ignore[method-assign]


def _unclosed_sessions() -> list[str]:
    import gc

    gc.collect()
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is None:
        return []
    return [
        repr(obj)
        for obj in gc.get_objects()
        if isinstance(obj, aiohttp.ClientSession) and not obj.closed
    ]


def _run_blocks(specs: list[dict[str, object]]) -> int:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return _run_each(specs, loop)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _run_each(specs: list[dict[str, object]], loop: asyncio.AbstractEventLoop) -> int:
    import ast
    import traceback

    namespace: dict[str, object] = {"__name__": "__main__"}
    for spec in specs:
        block = Block(**spec)  # type: ignore[arg-type]
        where = f"{block.page}, the block at line {block.line}"
        print(f"aopkit-docrun: running {where}", file=sys.stderr, flush=True)
        padded = "\n" * (block.line - 1) + block.source  # tracebacks show the page's own lines
        try:
            code = compile(
                padded, block.page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            if block.run:
                result = eval(code, namespace)
                if asyncio.iscoroutine(result):
                    loop.run_until_complete(result)
        except BaseException:
            print(f"FAILED: {where}", file=sys.stderr)
            traceback.print_exc()
            return 1
        if block.run and (sessions := _unclosed_sessions()):
            print(f"FAILED: {where}: Unclosed client session {sessions}", file=sys.stderr)
            return 1
    return 0


def _run_example(script: str, args: list[str]) -> int:
    import runpy

    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).parent))
    runpy.run_path(script, run_name="__main__")
    if sessions := _unclosed_sessions():
        print(f"FAILED: {script}: Unclosed client session {sessions}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    del sys.path[0]  # this file's folder (tests/) is no part of what a reader's code can import
    _guard_network()
    mode, target, *rest = sys.argv[1:]
    sys.exit(_run_blocks(json.loads(target)) if mode == "--blocks" else _run_example(target, rest))
