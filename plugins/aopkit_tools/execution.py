"""Python code in a sandbox: ``CodeExecutor(enabled=True).tools()``.

Each run gets bubblewrap's namespaces (user, mount, pid, network, ipc, uts), a read-only
system, private tmpfs, a clean environment, and limits on the whole process tree (a control
group where the host allows it, rlimits otherwise). Without bubblewrap it refuses, unless the
program opts into ``isolation="unsafe-process"``. docs/tools.md lists what each stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs

from aopkit import Tool

from . import bubblewrap
from .cgroups import CgroupPlace, RunCgroup, find_place
from .errors import ExecutionFailed, NotEnabled, SandboxUnavailable, ToolsError

ENABLE_ENV = "AOPKIT_ENABLE_CODE_EXECUTION"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
ISOLATIONS = ("bubblewrap", "unsafe-process")
_GRACE = 1.0  # seconds to collect the last output once the process is gone
_OOM_POLL = 0.05  # seconds between looks for a process the kernel killed at the memory limit

# The first step, run by this program's interpreter before the sandbox starts: join the run's
# control groups, set the limits (soft = hard, so nothing inside can raise them; the CPU hard
# limit is one second later, so SIGXCPU comes first), leave root, trade the program's kernel
# session keyring (namespaces do not separate keyrings) for a new empty one, then become the
# command.
_LAUNCH = """
import ctypes, json, os, resource, sys
setup = json.loads(sys.argv[1])
for path in setup["join"]:
    with open(path, "w") as group:
        group.write(str(os.getpid()))
for kind, soft, hard in setup["limits"]:
    resource.setrlimit(kind, (soft, hard))
if setup["uid"] is not None:
    os.setgroups([])
    os.setgid(setup["gid"])
    os.setuid(setup["uid"])
if setup["keyctl"] is not None:  # KEYCTL_JOIN_SESSION_KEYRING, anonymous
    ctypes.CDLL(None).syscall(setup["keyctl"], 1, None)
os.execv(sys.argv[2], sys.argv[2:])
"""
# The number of the keyctl system call: x86-64, and the generic table (arm64, RISC-V,
# LoongArch). Elsewhere the session keyring is kept (docs/tools.md says so).
_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "loongarch64": 219}

# Without a control group, the process limit is set inside the sandbox, where it counts the
# processes of the sandbox's own user namespace (Linux 5.14 and later): the run's, not every
# process of the host user that started it.
_COUNT_PROCESSES = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NPROC, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


@attrs.frozen
class Sandbox:
    """How code runs on this machine, found once per executor: the isolation, the interpreter
    (its path as the code sees it), host directories bound read-only (host path, path inside),
    the host user that starts the sandbox (None: the program's own), bubblewrap (None in the
    unsafe mode), and where each run's control group is made (None: rlimits only)."""

    isolation: str
    python: str
    binds: tuple[tuple[str, str], ...]
    uid: int | None
    gid: int | None
    bwrap: str | None
    cgroup: CgroupPlace | None

    @property
    def limits(self) -> str:
        """What bounds the whole run's memory and processes: ``cgroup v2``, ``cgroup v1``, or
        ``rlimits`` (each process alone; see docs/tools.md)."""
        return f"cgroup v{self.cgroup.version}" if self.cgroup else "rlimits"


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
    memory_exceeded: bool = False  # the kernel killed a process at the run's memory limit

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
        elif self.memory_exceeded and self.signal == "SIGKILL":
            status = "killed by SIGKILL: the memory limit was reached"
        elif self.signal == "SIGXCPU":
            status = "killed by SIGXCPU: the CPU-time limit was reached"
        elif self.signal is not None:
            status = f"killed by {self.signal}"
        else:
            status = f"exit code {self.returncode}"
        if self.memory_exceeded and not status.endswith("reached"):
            status += " (a process of the run was killed at the memory limit)"
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


@attrs.frozen
class _Launch:
    """What to start for one run, and what to clean up after it."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: list[int]
    directory: Path | None  # the unsafe mode's working directory, removed afterwards


class CodeExecutor:
    """Runs Python programs in a fresh sandbox, one per run.

    Off unless ``enabled=True``; with ``enabled=None`` the environment variable
    ``AOPKIT_ENABLE_CODE_EXECUTION=1`` switches it on (read at each call). The code sees only
    ``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` and what ``env`` adds; ``venv`` offers it the
    packages of a virtual environment, read-only. When the program runs as root, the sandbox
    is started as ``user`` (``nobody``).
    """

    def __init__(
        self,
        *,
        enabled: bool | None = None,
        isolation: str = "bubblewrap",
        timeout: float = 10.0,
        cpu_seconds: int = 10,
        memory_mb: int = 512,
        max_processes: int = 32,
        max_file_mb: int = 16,
        max_disk_mb: int = 64,
        max_open_files: int = 64,
        max_output: int = 20_000,
        python: str | None = None,
        venv: str | os.PathLike[str] | None = None,
        user: str = "nobody",
        cgroup: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ToolsError(
                f"unknown isolation {isolation!r}: use 'bubblewrap' (the sandbox) or "
                "'unsafe-process' (no sandbox: see docs/tools.md)"
            )
        if python is not None and venv is not None:
            raise ToolsError("pass python= or venv=, not both: a venv brings its interpreter")
        for name, value in (env or {}).items():
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise ToolsError(
                    f"cannot give the code the environment variable {name!r}: names must be "
                    "non-empty without '=' or NUL, values without NUL"
                )
        self._enabled = enabled
        self.isolation = isolation
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_mb = max_file_mb
        self.max_disk_mb = max_disk_mb
        self.max_open_files = max_open_files
        self.max_output = max_output
        self.python = python
        self.venv = None if venv is None else os.fspath(venv)
        self.user = user
        self.cgroup = cgroup
        self.env = dict(env or {})  # more variables for the code; nothing is inherited
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
        """Find out (once; it starts a probe run) how code will run here."""
        if self._sandbox is None:
            self._sandbox = self._prepare()
        return self._sandbox

    def _prepare(self) -> Sandbox:
        uid = gid = None
        if os.geteuid() == 0:
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
        bwrap = bubblewrap.find() if self.isolation == "bubblewrap" else None
        host = self._interpreter(uid, gid)
        python = host
        binds: tuple[tuple[str, str], ...] = ()
        if bwrap is not None:
            prefixes = _prefixes(host)
            binds = tuple((p, p) for p in prefixes if not bubblewrap.under_system(p))
            if self.venv is not None:
                binds += ((os.path.abspath(self.venv), bubblewrap.VENV),)
                python = f"{bubblewrap.VENV}/bin/python"
            if uid is not None and gid is not None:
                for source, _ in binds:
                    if not _reachable(source, uid, gid):
                        raise ToolsError(f"user {self.user!r} cannot reach {source!r}")
        sandbox = Sandbox(self.isolation, python, binds, uid, gid, bwrap, find_place(self.cgroup))
        self._probe(sandbox)
        return sandbox

    def _interpreter(self, uid: int | None, gid: int | None) -> str:
        """The host path of the interpreter: the venv's, ``python``, or this program's base
        interpreter (when the sandbox's user cannot run it, the system's ``python3``)."""
        if self.venv is not None:
            venv = Path(self.venv).absolute()
            if not (venv / "pyvenv.cfg").is_file():
                raise ToolsError(f"{self.venv!r} is not a virtual environment: no pyvenv.cfg")
            candidates = [str(venv / "bin" / "python")]
        elif self.python is not None:
            candidates = [self.python]
        else:
            base = Path(sys.base_prefix, "bin", "python{}.{}".format(*sys.version_info))
            system = shutil.which("python3", path=SANDBOX_PATH)
            candidates = [str(base) if base.exists() else sys.executable, *filter(None, [system])]
        for candidate in candidates:
            if os.access(candidate, os.X_OK) and (
                uid is None or gid is None or _reachable(candidate, uid, gid)
            ):
                return candidate
        raise ToolsError(
            f"no Python interpreter that user {self.user!r} can run was found (tried "
            f"{', '.join(map(repr, candidates))}); pass CodeExecutor(python=...) or venv=..."
        )

    def _probe(self, sandbox: Sandbox) -> None:
        """Start one empty run, so a sandbox that cannot start here is an error now, with
        bubblewrap's reason, rather than a puzzling failure of the model's code later."""
        launch, group = self._start(sandbox, "pass")
        try:
            probe = subprocess.run(
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                pass_fds=launch.fds,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(f"cannot start the sandbox: {exc}") from None
        finally:
            self._cleanup(launch, group)
        if probe.returncode != 0:
            reason = probe.stderr.decode("utf-8", "replace").strip()[-1000:]
            raise SandboxUnavailable(
                f"the {sandbox.isolation} sandbox does not start on this machine "
                f"(exit code {probe.returncode}): {reason}"
            )

    def _start(self, sandbox: Sandbox, code: str) -> tuple[_Launch, RunCgroup | None]:
        """The run's control group and what to launch; ``_cleanup`` undoes both."""
        group = self._group(sandbox)
        try:
            return self._launch(sandbox, code, group), group
        except BaseException:
            if group is not None:
                group.remove()
            raise

    def _group(self, sandbox: Sandbox) -> RunCgroup | None:
        if sandbox.cgroup is None:
            return None
        try:
            return RunCgroup(
                sandbox.cgroup, memory=self.memory_mb * 2**20, processes=self.max_processes
            )
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot make the run's control group under {sandbox.cgroup.parents[0]!r}: "
                f"{exc.strerror or exc}"
            ) from None

    def _launch(self, sandbox: Sandbox, code: str, group: RunCgroup | None) -> _Launch:
        limits: list[tuple[int, int, int]] = [
            (resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1),
            (resource.RLIMIT_FSIZE, self.max_file_mb * 2**20, self.max_file_mb * 2**20),
            (resource.RLIMIT_NOFILE, self.max_open_files, self.max_open_files),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        program = [sandbox.python, "-I", "main.py"]
        if group is None:  # the fallback (docs/tools.md says what it does not bound)
            memory = self.memory_mb * 2**20
            limits.append((resource.RLIMIT_AS, memory, memory))
            if sandbox.bwrap is not None:
                boot = [sandbox.python, "-I", "-S", "-c", _COUNT_PROCESSES]
                program = [*boot, str(self.max_processes), *program]
            else:
                limits.append((resource.RLIMIT_NPROC, self.max_processes, self.max_processes))
        setup = {
            "join": group.procs_files if group else [],
            "limits": limits,
            "uid": sandbox.uid,
            "gid": sandbox.gid,
            "keyctl": _KEYCTL.get(os.uname().machine),
        }
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCH, json.dumps(setup)]
        if sandbox.bwrap is not None:
            env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": bubblewrap.WORK}
            env |= {"TMPDIR": "/tmp", **self.env}
            argv, fds = bubblewrap.command(
                sandbox.bwrap,
                program=program,
                code=code,
                env=env,
                binds=dict(sandbox.binds),
                disk_bytes=self.max_disk_mb * 2**20,
            )
            return _Launch([*launcher, *argv], {}, "/", fds, None)
        # The unsafe mode: a private directory in the shared temporary directory.
        outer = Path(
            tempfile.mkdtemp(prefix="aopkit-exec-", dir=None if sandbox.uid is None else "/tmp")
        )
        work = outer / "work"  # so that "../x" lands in a directory removed with it
        try:
            work.mkdir()
            (work / "main.py").write_text(code, encoding="utf-8")
            if sandbox.uid is not None and sandbox.gid is not None:
                outer.chmod(0o711)  # the user may pass through, not write
                os.chown(work, sandbox.uid, sandbox.gid)
        except BaseException:
            shutil.rmtree(outer, ignore_errors=True)
            raise
        env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        env |= self.env
        return _Launch([*launcher, *program], env, str(work), [], outer)

    @staticmethod
    def _cleanup(launch: _Launch, group: RunCgroup | None) -> None:
        for fd in launch.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if group is not None:
            group.remove()
        if launch.directory is not None:
            shutil.rmtree(launch.directory, ignore_errors=True)

    async def execute_python(self, code: str) -> str:
        """Run a Python program in a fresh sandboxed process and return what it printed.

        Only standard output and standard error come back, so print what you want to see.
        Every run starts from scratch in an empty directory, has no input and no network, and
        is limited in time, memory, processes and disk. Only the standard library is sure to
        exist.

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
        try:
            code.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ToolsError(
                f"the code is not valid text ({exc.reason} at character {exc.start}); "
                "nothing was run"
            ) from None
        sandbox = (
            self._sandbox if self._sandbox is not None else await asyncio.to_thread(self.sandbox)
        )
        launch, group = self._start(sandbox, code)
        try:
            return await self._spawn(sandbox, launch, group)
        finally:  # in a thread that finishes even if this task is cancelled meanwhile
            await asyncio.shield(asyncio.to_thread(self._cleanup, launch, group))

    async def _spawn(self, sandbox: Sandbox, launch: _Launch, group: RunCgroup | None) -> Execution:
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                cwd=launch.cwd,
                env=launch.env,
                pass_fds=launch.fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start the sandbox: {exc.strerror}") from None
        for fd in launch.fds:  # the child has its copies
            os.close(fd)
        launch.fds.clear()
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Capture(self.max_output), _Capture(self.max_output)
        readers = [
            asyncio.create_task(out.drain(proc.stdout)),
            asyncio.create_task(err.drain(proc.stderr)),
        ]
        watch = None if group is None else asyncio.create_task(_end_at_oom(proc.pid, group))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), self.timeout)
        except asyncio.TimeoutError:
            timed_out = True
        except BaseException:  # cancelled: leave nothing running
            _kill(proc.pid, group)
            for task in readers:
                task.cancel()
            await asyncio.shield(proc.wait())  # reap it (SIGKILL: at once)
            raise
        finally:
            if watch is not None:
                watch.cancel()
        _kill(proc.pid, group)  # what the program left running goes too
        returncode = await proc.wait()
        _, pending = await asyncio.wait(readers, timeout=_GRACE)
        for task in pending:  # a process that escaped still holds the pipe
            task.cancel()
        number = -returncode if returncode < 0 else None
        if sandbox.bwrap is not None and returncode > 128:  # bubblewrap's way to say "signal"
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
            memory_exceeded=group is not None and group.memory_exceeded(),
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


async def _end_at_oom(pgid: int, group: RunCgroup) -> None:
    """End the whole run once the kernel killed one of its processes at the memory limit.
    Where the kernel kills the group as one (cgroup v2's ``memory.oom.group``) this finds it
    gone; where it kills one process only (cgroup v1, or a v2 without that file), the others
    would go on, and a program split over processes would slip under the limit."""
    while not group.memory_exceeded():
        await asyncio.sleep(_OOM_POLL)
    _kill(pgid, group)


def _kill(pgid: int, group: RunCgroup | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if group is not None:
        group.kill()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _prefixes(python: str) -> list[str]:
    """Where ``python``'s standard library lives (its base prefixes), asked of it."""
    query = "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)"
    try:
        answer = subprocess.run(
            [python, "-I", "-S", "-c", query],
            env={"PATH": SANDBOX_PATH},
            capture_output=True,
            timeout=30,
            check=True,
            text=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolsError(f"cannot run the interpreter {python!r}: {exc}") from None
    return sorted(set(answer.stdout.split()))


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
