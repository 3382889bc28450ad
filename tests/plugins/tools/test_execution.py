"""Code execution: off by default, and the escapes a hostile program tries are stopped (or, where
a process sandbox cannot stop them, the limits are pinned down as docs/tools.md describes)."""

import asyncio
import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from aopkit import Toolkit, ToolUseBlock
from aopkit_tools import CodeExecutor, NotEnabled
from aopkit_tools import execution as execution_module

ROOT = os.geteuid() == 0


def use(code):
    return ToolUseBlock("call-py", "execute_python", {"code": code})


@pytest.fixture
def executor():
    """Small limits, so that every escape attempt ends within about two seconds."""
    return CodeExecutor(
        enabled=True,
        timeout=2,
        cpu_seconds=1,
        memory_mb=256,
        max_processes=16,
        max_file_mb=1,
        max_output=1000,
    )


def alive(pid):
    """Is ``pid`` a running (not zombie) process?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_dead(pids, seconds=3.0):
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return [p for p in pids if alive(p)]


async def test_off_unless_enabled_and_nothing_runs(kernel, monkeypatch):
    async def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.delenv("AOPKIT_ENABLE_CODE_EXECUTION", raising=False)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_process)
    toolkit = Toolkit(CodeExecutor().tools(), kernel=kernel)
    result = await toolkit.call(use("print('hi')"))
    assert result.is_error
    assert result.output.startswith("NotEnabled: code execution is off, and nothing was run")
    assert "CodeExecutor(enabled=True)" in result.output
    assert "AOPKIT_ENABLE_CODE_EXECUTION=1" in result.output
    with pytest.raises(NotEnabled):
        await CodeExecutor(enabled=False).run("print('hi')")


async def test_the_environment_variable_enables_it(kernel, monkeypatch):
    executor = CodeExecutor()
    monkeypatch.setenv("AOPKIT_ENABLE_CODE_EXECUTION", "1")
    assert (await executor.run("print(6 * 7)")).stdout == "42\n"
    monkeypatch.setenv("AOPKIT_ENABLE_CODE_EXECUTION", "0")
    assert not executor.enabled


async def test_runs_a_program_and_returns_its_output(kernel, executor):
    toolkit = Toolkit(executor.tools(), kernel=kernel)
    result = await toolkit.call(
        use("import json, sys\nprint(json.dumps([1, 2]))\nprint('w', file=sys.stderr)")
    )
    assert not result.is_error
    assert result.output == "exit code 0\n--- stdout ---\n[1, 2]\n--- stderr ---\nw"
    failed = await toolkit.call(use("raise ValueError('bad input')"))
    assert failed.is_error
    assert failed.output.startswith("ExecutionFailed: exit code 1\n--- stderr ---\nTraceback")
    assert failed.output.endswith("ValueError: bad input")
    spec = executor.tool.parameters["properties"]["code"]
    assert spec == {
        "type": "string",
        "description": "The complete program, as the text of a .py file.",
    }


async def test_an_endless_sleep_is_stopped_at_the_timeout_with_its_children(executor):
    code = """
import subprocess, sys, time
child = "import os, time; print(os.readlink('/proc/self'), flush=True); time.sleep(60)"
subprocess.Popen([sys.executable, "-c", child])
time.sleep(60)
"""
    started = time.monotonic()
    result = await executor.run(code)
    assert time.monotonic() - started < 4
    assert result.timed_out and not result.ok
    assert result.report().startswith("stopped after the 2 s time limit")
    [child] = [int(line) for line in result.stdout.split()]
    assert await wait_dead([child]) == []


async def test_an_endless_loop_is_stopped_at_the_cpu_limit(executor):
    executor.timeout = 10
    started = time.monotonic()
    result = await executor.run("while True:\n    pass")
    assert time.monotonic() - started < 4
    assert not result.timed_out and result.signal in {"SIGXCPU", "SIGKILL"}
    assert "killed by SIG" in result.report()


async def test_a_memory_bomb_hits_the_memory_limit(executor):
    started = time.monotonic()
    result = await executor.run("hoard = []\nwhile True:\n    hoard.append(' ' * 10**7)")
    assert time.monotonic() - started < 4
    assert result.returncode == 1 and result.stderr.rstrip().endswith("MemoryError")


async def test_a_fork_bomb_hits_the_process_limit_and_the_machine_stays_usable(executor):
    code = """
import os
while True:
    try:
        if os.fork() == 0:
            print(os.readlink("/proc/self"), flush=True)
    except OSError:
        pass
"""
    result = await executor.run(code)
    assert result.timed_out
    children = [int(line) for line in result.stdout.split()]
    assert len(children) < 16, "the process limit held"
    assert await wait_dead(children) == []
    assert subprocess.run(["true"], check=False).returncode == 0


async def test_the_parents_environment_and_secrets_are_not_visible(executor, monkeypatch):
    monkeypatch.setenv("AOPKIT_TEST_SECRET", "s3cret-value")
    code = "import os\nprint(sorted(os.environ))\nprint(os.environ.get('AOPKIT_TEST_SECRET'))"
    result = await executor.run(code)
    assert result.stdout.splitlines() == ["['HOME', 'LANG', 'PATH', 'TMPDIR']", "None"]
    executor.env = {"MPLBACKEND": "Agg"}  # what the program passes on, and only that
    added = await executor.run(code)
    assert added.stdout.splitlines()[0] == "['HOME', 'LANG', 'MPLBACKEND', 'PATH', 'TMPDIR']"


@pytest.mark.skipif(not ROOT, reason="only a root program runs the code as another user")
async def test_as_root_the_code_cannot_read_the_parents_process_environment(executor, monkeypatch):
    monkeypatch.setenv("AOPKIT_TEST_SECRET", "s3cret-value")
    result = await executor.run(f"print(open('/proc/{os.getpid()}/environ').read())")
    assert "PermissionError" in result.stderr and "s3cret-value" not in result.stdout


async def test_each_run_has_a_fresh_working_directory_that_is_removed(executor):
    code = """
import os
print(os.getcwd())
print(os.environ["HOME"])
print(sorted(os.listdir(".")))
open("left-behind.txt", "w").write("x")
try:
    open("../escape.txt", "w").write("x")
except OSError as exc:
    print(type(exc).__name__)
"""
    first = (await executor.run(code)).stdout.splitlines()
    second = (await executor.run(code)).stdout.splitlines()
    assert first[0] == first[1], "HOME is the working directory"
    assert first[0] != second[0]
    assert first[2] == second[2] == "['main.py']", "nothing from the first run is left"
    work = Path(first[0])
    assert not work.exists() and not work.parent.exists(), "removed with what '../' wrote"
    assert work.parent.parent == Path(tempfile.gettempdir())
    if ROOT:
        assert first[3] == "PermissionError", "the unprivileged user cannot write beside it"


async def test_writes_elsewhere_are_stopped_only_by_file_permissions(executor, tmp_path):
    target = tmp_path / "outside.txt"
    result = await executor.run(f"open({str(target)!r}, 'w').write('x')")
    if ROOT:  # the code runs as nobody, who may not write in root's directories
        assert "PermissionError" in result.stderr and not target.exists()
    else:  # same user: the rlimits do not confine the file system (see docs/tools.md)
        assert target.exists()


async def test_output_is_capped_and_the_cut_is_counted(executor):
    result = await executor.run("import sys\nprint('x' * 1_000_000)\nsys.stderr.write('e' * 5000)")
    assert result.stdout == "x" * 1000 and result.stdout_cut == 1_000_001 - 1000
    assert result.stderr_cut == 4000
    report = result.report()
    assert "[999001 more bytes of stdout were cut]" in report
    assert "[4000 more bytes of stderr were cut]" in report
    assert len(report) < 2200


async def test_files_are_size_limited(executor):
    result = await executor.run("open('big', 'wb').write(b'x' * 2 * 2**20)")
    assert "File too large" in result.stderr


async def test_input_is_closed(executor):
    result = await executor.run("import sys\nprint(repr(sys.stdin.read()))")
    assert result.stdout == "''\n"


async def test_no_network_when_namespaces_are_available(executor):
    if not executor.sandbox().namespaces:
        pytest.skip("this system does not allow network namespaces (see docs/tools.md)")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        result = await executor.run(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
        )
    finally:
        listener.close()
    assert result.returncode == 1 and "Network is unreachable" in result.stderr


async def test_cancelling_a_run_kills_it_and_removes_its_directory(executor):
    executor.timeout = 30
    marker = f"pid-{uuid.uuid4().hex}"
    code = (
        f"import os, time\nopen({marker!r}, 'w').write(os.readlink('/proc/self'))\ntime.sleep(60)"
    )
    task = asyncio.create_task(executor.run(code))
    pattern = f"aopkit-exec-*/work/{marker}"
    deadline = time.monotonic() + 5
    while (
        not (found := list(Path(tempfile.gettempdir()).glob(pattern)))
        or not found[0].stat().st_size
    ):
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.02)
    pid = int(found[0].read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_dead([pid]) == []
    assert not found[0].parent.parent.exists()


async def test_as_root_the_code_runs_as_an_unprivileged_user(executor, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # private to root when run as root
    sandbox = executor.sandbox()
    result = await executor.run("import os\nprint(os.getuid(), os.getgid())")
    if ROOT:
        assert sandbox.uid not in (None, 0) and sandbox.tmp == "/tmp"
        assert result.stdout == f"{sandbox.uid} {sandbox.gid}\n"
    else:
        assert sandbox.uid is None and sandbox.tmp is None and result.ok


def test_an_unknown_user_is_a_clear_error():
    if not ROOT:
        pytest.skip("the user only matters when the program runs as root")
    with pytest.raises(execution_module.ToolsError, match="no such user"):
        CodeExecutor(user="no-such-user-aopkit").sandbox()
