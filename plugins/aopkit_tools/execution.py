"""Python code in a separate, limited process: ``CodeExecutor(enabled=True).tools()``.

A process sandbox, not a container: resource limits, a throwaway directory, a scrubbed
environment, and fresh network and pid namespaces where the system allows them. docs/tools.md
says what that stops and what it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import attrs

from aopkit import Tool

from .errors import ExecutionFailed, NotEnabled, ToolsError

ENABLE_ENV = "AOPKIT_ENABLE_CODE_EXECUTION"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_GRACE = 1.0  # seconds to collect the last output once the process is gone

# The child's first step. It sets the limits (soft = hard, so the code cannot raise them; the
# CPU hard limit is one second later, so SIGXCPU comes first), leaves root for an unprivileged
# user, then runs the code in a fresh isolated interpreter. As the init of a new pid namespace it
# runs the code as its child: init is immune to signals it has no handler for, and when it exits
# the kernel kills everything left in the namespace. A signal death comes back as 128 + signal.
_BOOT = """
import os, resource, sys
cpu, memory, processes, fsize, files, uid, gid = (int(a) for a in sys.argv[1:])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
for kind, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, files),
        (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(kind, (value, value))
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
if os.getpid() == 1:
    child = os.fork()
    if child:
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        os._exit(code if code >= 0 else 128 - code)
os.execv(sys.executable, [sys.executable, "-I", "main.py"])
"""


@attrs.frozen
class Sandbox:
    """How code runs on this machine: the interpreter, the user (None: the program's own), the
    directory the working directories are made in (None: the temporary directory), and the
    ``unshare`` command that gives fresh network and pid namespaces (empty: none)."""

    python: str
    uid: int | None
    gid: int | None
    tmp: str | None
    unshare: tuple[str, ...]

    @property
    def namespaces(self) -> bool:
        return bool(self.unshare)


@attrs.frozen
class Execution:
    """One run: its output (each stream capped; ``*_cut`` bytes were dropped), how it ended."""

    returncode: int | None  # None when the run was stopped by a signal or the timeout
    signal: str | None
    timed_out: bool
    stdout: str
    stderr: str
    stdout_cut: int
    stderr_cut: int
    timeout: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def report(self) -> str:
        """The status line, then each non-empty stream, for a model to read."""
        if self.timed_out:
            status = (
                f"stopped after the {self.timeout:g} s time limit "
                "(every process it started was killed)"
            )
        elif self.signal == "SIGXCPU":
            status = "killed by SIGXCPU: the CPU-time limit was reached"
        elif self.signal is not None:
            status = f"killed by {self.signal}"
        else:
            status = f"exit code {self.returncode}"
        lines = [status]
        for name, text, cut in (
            ("stdout", self.stdout, self.stdout_cut),
            ("stderr", self.stderr, self.stderr_cut),
        ):
            if text or cut:
                lines += [f"--- {name} ---", text.rstrip("\n")]
            if cut:
                lines.append(f"[{cut} more bytes of {name} were cut]")
        return "\n".join(lines)


class CodeExecutor:
    """Runs Python programs in a fresh, limited child process.

    Off unless ``enabled=True``; with ``enabled=None`` the environment variable
    ``AOPKIT_ENABLE_CODE_EXECUTION=1`` switches it on (read at each call). When the program runs
    as root, the code runs as ``user`` (``nobody``): the process limit does not bind root.
    The code sees only ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR`` (both its working
    directory), and what ``env`` adds.
    """

    def __init__(
        self,
        *,
        enabled: bool | None = None,
        timeout: float = 10.0,
        cpu_seconds: int = 10,
        memory_mb: int = 512,
        max_processes: int = 32,
        max_file_mb: int = 16,
        max_open_files: int = 64,
        max_output: int = 20_000,
        python: str | None = None,
        user: str = "nobody",
        namespaces: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._enabled = enabled
        self.timeout = timeout
        self.max_output = max_output
        self.python = python
        self.user = user
        self.use_namespaces = namespaces
        self.env = dict(env or {})  # more variables for the code; nothing is inherited
        self._limits = [
            cpu_seconds,
            memory_mb * 2**20,
            max_processes,
            max_file_mb * 2**20,
            max_open_files,
        ]
        self._sandbox: Sandbox | None = None
        self.tool = Tool(self.execute_python, group="code")

    @property
    def enabled(self) -> bool:
        if self._enabled is not None:
            return self._enabled
        return os.environ.get(ENABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}

    def tools(self) -> list[Tool]:
        return [self.tool]

    def sandbox(self) -> Sandbox:
        """Find out (once; it may start a probe process) how code will run here."""
        if self._sandbox is None:
            self._sandbox = self._prepare()
        return self._sandbox

    def _prepare(self) -> Sandbox:
        as_root = os.geteuid() == 0
        uid = gid = tmp = None
        if as_root:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                raise ToolsError(
                    f"cannot run code as user {self.user!r}: there is no such user; "
                    "pass CodeExecutor(user=...) an unprivileged user that exists"
                ) from None
            if entry.pw_uid == 0:
                raise ToolsError(f"refusing to run code as {self.user!r}, which is root")
            uid, gid = entry.pw_uid, entry.pw_gid
            tmp = next(
                (d for d in (tempfile.gettempdir(), "/tmp") if _reachable(d, uid, gid)), None
            )
            if tmp is None:
                raise ToolsError(
                    f"user {self.user!r} cannot reach the temporary directory "
                    f"{tempfile.gettempdir()!r} nor /tmp, where the code would run"
                )
        python = self.python or _interpreter(uid, gid, self.user)
        return Sandbox(python, uid, gid, tmp, _unshare(as_root) if self.use_namespaces else ())

    async def execute_python(self, code: str) -> str:
        """Run a Python program in a fresh sandboxed process and return what it printed.

        Only standard output and standard error come back, so print what you want to see.
        Every run starts from scratch in an empty directory, has no input, and is limited in
        time, memory, processes and file size. Only the standard library is sure to exist.

        Args:
            code: The complete program, as the text of a .py file.
        """
        result = await self.run(code)
        if not result.ok:
            raise ExecutionFailed(result.report())
        return result.report()

    async def run(self, code: str) -> Execution:
        """Run ``code`` and return how it went; refuses while the executor is off."""
        if not self.enabled:
            raise NotEnabled(
                "code execution is off, and nothing was run; the program can enable it with "
                f"CodeExecutor(enabled=True) or by setting {ENABLE_ENV}=1 in its environment"
            )
        sandbox = (
            self._sandbox if self._sandbox is not None else await asyncio.to_thread(self.sandbox)
        )
        outer = Path(tempfile.mkdtemp(prefix="aopkit-exec-", dir=sandbox.tmp))
        try:
            work = outer / "work"  # so that "../x" lands in a directory removed with it
            work.mkdir()
            (work / "main.py").write_text(code, encoding="utf-8")
            if sandbox.uid is not None and sandbox.gid is not None:
                outer.chmod(0o711)  # the user may pass through, not write
                os.chown(work, sandbox.uid, sandbox.gid)
            return await self._spawn(sandbox, work)
        finally:
            shutil.rmtree(outer, ignore_errors=True)

    async def _spawn(self, sandbox: Sandbox, work: Path) -> Execution:
        home = str(work)
        env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home, **self.env}
        ids = [
            -1 if sandbox.uid is None else sandbox.uid,
            -1 if sandbox.gid is None else sandbox.gid,
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *sandbox.unshare,
                sandbox.python,
                "-I",
                "-S",
                "-c",
                _BOOT,
                *(str(n) for n in [*self._limits, *ids]),
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            raise ToolsError(f"cannot start {sandbox.python!r}: {exc.strerror}") from None
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Capture(self.max_output), _Capture(self.max_output)
        readers = [
            asyncio.create_task(out.drain(proc.stdout)),
            asyncio.create_task(err.drain(proc.stderr)),
        ]
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), self.timeout)
        except asyncio.TimeoutError:
            timed_out = True
        except BaseException:  # cancelled: leave nothing running
            _kill_group(proc.pid)
            for task in readers:
                task.cancel()
            await asyncio.shield(proc.wait())  # reap it (SIGKILL: at once)
            raise
        _kill_group(proc.pid)  # what the program left running in its group goes too
        returncode = await proc.wait()
        _, pending = await asyncio.wait(readers, timeout=_GRACE)
        for task in pending:  # a process that left the group still holds the pipe
            task.cancel()
        number = -returncode if returncode < 0 else None
        if sandbox.unshare and returncode > 128:
            number = returncode - 128
        return Execution(
            returncode=None if number is not None or timed_out else returncode,
            signal=None if number is None else _signal_name(number),
            timed_out=timed_out,
            stdout=out.text(),
            stderr=err.text(),
            stdout_cut=out.cut,
            stderr_cut=err.cut,
            timeout=self.timeout,
        )


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and counts the rest (reading on, so the
    writer never blocks on a full pipe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    @property
    def cut(self) -> int:
        return self.total - len(self.kept)

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _interpreter(uid: int | None, gid: int | None, user: str) -> str:
    """This program's interpreter, or (when the code runs as another user who cannot reach
    it, e.g. one under /root) the first ``python3`` on the sandbox's PATH that user can run."""
    if uid is None or gid is None:
        return sys.executable
    for candidate in (sys.executable, shutil.which("python3", path=SANDBOX_PATH)):
        if candidate and _reachable(candidate, uid, gid):
            return candidate
    raise ToolsError(
        f"no Python interpreter that user {user!r} can run was found (this program's is "
        f"{sys.executable!r}); pass CodeExecutor(python=...) one that it can run"
    )


def _reachable(path: str, uid: int, gid: int) -> bool:
    """Has ``uid``/``gid`` (no other groups) execute permission on ``path`` (search permission,
    for a directory) and search permission on every directory above it?"""
    real = Path(os.path.realpath(path))
    for item in (*reversed(real.parents), real):
        info = item.stat()
        shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
        if not (info.st_mode >> shift) & 1:
            return False
    return True


@cache
def _unshare(as_root: bool) -> tuple[str, ...]:
    """The ``unshare`` command for fresh network and pid namespaces, if this system allows it:
    root may create them directly, anyone else needs a user namespace."""
    command = shutil.which("unshare", path=SANDBOX_PATH)
    if command is None:
        return ()
    user = () if as_root else ("--user", "--map-root-user")
    prefix = (command, *user, "--net", "--pid", "--fork", "--kill-child")
    try:
        probe = subprocess.run(
            [*prefix, "true"], env={"PATH": SANDBOX_PATH}, capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if probe.returncode == 0 else ()
