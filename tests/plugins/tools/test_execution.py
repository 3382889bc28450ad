"""Code execution: off by default, what a run returns, its limits, the refusal without
bubblewrap and the weaker mode a program must opt into. The attacks are in
test_sandbox_escapes.py."""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aopkit import Toolkit, ToolUseBlock
from aopkit_tools import CodeExecutor, Execution, NotEnabled, SandboxUnavailable, ToolsError
from aopkit_tools import bubblewrap as bubblewrap_module
from aopkit_tools import cgroups as cgroups_module
from aopkit_tools import execution as execution_module

ROOT = os.geteuid() == 0
HAS_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(
    not HAS_BWRAP, reason="no bubblewrap (see scripts/install-debian.sh)"
)


def use(code):
    return ToolUseBlock("call-py", "execute_python", {"code": code})


def small(**options):
    """Small limits, so that every run that hits one ends within about two seconds."""
    limits = dict(
        enabled=True,
        timeout=2,
        cpu_seconds=1,
        memory_mb=128,
        max_processes=16,
        max_file_mb=1,
        max_disk_mb=4,
        max_output=1000,
    )
    return CodeExecutor(**{**limits, **options})


@pytest.fixture
def executor():
    if not HAS_BWRAP:
        pytest.skip("no bubblewrap (see scripts/install-debian.sh)")
    return small()


@pytest.fixture
def public_tmp():
    """A directory the sandbox's user (``nobody`` under root) can reach, unlike ``tmp_path``."""
    path = Path(tempfile.mkdtemp(prefix="aopkit-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def alive(pid):
    """Is ``pid`` a running (not zombie) process?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


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


@needs_bwrap
async def test_the_environment_variable_enables_it(monkeypatch):
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
    exited = await executor.run("exit(3)")
    assert exited.returncode == 3 and exited.signal is None
    spec = executor.tool.parameters["properties"]["code"]
    assert spec == {
        "type": "string",
        "description": "The complete program, as the text of a .py file.",
    }


async def test_the_code_runs_in_work_as_an_unprivileged_user_with_a_built_environment(executor):
    code = """
import os, pwd
print(os.getcwd(), os.environ["HOME"], os.environ["TMPDIR"])
print(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name)
print(sorted(os.environ))
print(sorted(os.listdir(".")), len(open("main.py").read()))
"""
    lines = (await executor.run(code)).stdout.splitlines()
    assert lines[0] == "/work /work /tmp"
    assert lines[1] == "1000 1000 sandbox"
    assert lines[2] == "['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']"
    assert lines[3] == f"['main.py'] {len(code)}"
    executor.env = {"MPLBACKEND": "Agg"}  # what the program passes on, and only that
    added = await executor.run("import os\nprint(sorted(os.environ))")
    assert added.stdout == "['HOME', 'LANG', 'MPLBACKEND', 'PATH', 'PWD', 'TMPDIR']\n"


async def test_a_signal_death_is_reported_by_name(executor):
    result = await executor.run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert result.returncode is None and result.signal == "SIGTERM"
    assert result.report() == "killed by SIGTERM"


async def test_an_endless_loop_is_stopped_at_the_cpu_limit(executor):
    executor.timeout = 20  # CPU time accrues slowly on a busy machine
    started = time.monotonic()
    result = await executor.run("while True:\n    pass")
    assert time.monotonic() - started < 15
    assert not result.timed_out and result.signal in {"SIGXCPU", "SIGKILL"}
    assert "killed by SIG" in result.report()


async def test_a_memory_bomb_is_killed_and_reported(executor):
    started = time.monotonic()
    result = await executor.run("hoard = []\nwhile True:\n    hoard.append(' ' * 10**7)")
    assert time.monotonic() - started < 4
    if executor.sandbox().cgroup is not None:  # the kernel kills it at the group's limit
        assert result.memory_exceeded and result.signal == "SIGKILL"
        assert result.report() == "killed by SIGKILL: the memory limit was reached"
    else:  # the fallback: the address-space limit makes the allocation fail
        assert result.returncode == 1 and result.stderr.rstrip().endswith("MemoryError")


def test_a_process_killed_at_the_memory_limit_is_reported_even_when_the_run_succeeds():
    def ended(**how):
        fields = dict(returncode=None, signal=None, timed_out=False, stdout="", stderr="")
        fields |= dict(stdout_cut=0, stderr_cut=0, timeout=2, memory_exceeded=True)
        return Execution(**{**fields, **how}).report()

    assert (
        ended(returncode=0) == "exit code 0 (a process of the run was killed at the memory limit)"
    )
    assert ended(signal="SIGKILL") == "killed by SIGKILL: the memory limit was reached"
    assert ended(timed_out=True).startswith("stopped after the 2 s time limit")


async def test_output_is_capped_and_the_cut_is_counted(executor):
    result = await executor.run("import sys\nprint('x' * 1_000_000)\nsys.stderr.write('e' * 5000)")
    assert result.stdout == "x" * 1000 and result.stdout_cut == 1_000_001 - 1000
    assert result.stderr_cut == 4000
    report = result.report()
    assert "[999001 more bytes of stdout were cut]" in report
    assert "[4000 more bytes of stderr were cut]" in report
    assert len(report) < 2200


async def test_files_and_private_disks_are_size_limited(executor):
    result = await executor.run("open('big', 'wb').write(b'x' * 2 * 2**20)")
    assert "File too large" in result.stderr
    code = """
import os
import re
for place in ("/work", "/tmp", "/var/tmp", "/dev/shm"):
    written = 0
    try:
        for n in range(10):
            with open(f"{place}/f{n}", "wb") as f:
                f.write(b"x" * 2**20)
            written += 1
    except OSError as exc:
        print(place, written, exc.strerror)
"""
    lines = (await executor.run(code)).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["/work", "/tmp", "/var/tmp", "/dev/shm"]
    for line in lines:  # 4 MB each (max_disk_mb); main.py takes a page of /work
        written, reason = line.split(" ", 2)[1:]
        assert written in {"3", "4"} and reason == "No space left on device", line


async def test_input_is_closed(executor):
    result = await executor.run("import sys\nprint(repr(sys.stdin.read()))")
    assert result.stdout == "''\n"


async def test_code_of_any_size_and_characters_arrives_whole(executor):
    text = "é\u2028\x00'\"\\" * 20000
    code = f"text = {text!r}\nprint(len(text), text == {text!r})"
    result = await executor.run(code)
    assert result.stdout == f"{len(text)} True\n"


async def test_code_that_is_not_text_and_bad_variables_are_clear_errors(executor):
    with pytest.raises(
        ToolsError, match=r"not valid text \(surrogates not allowed at character 7\)"
    ):
        await executor.run("print('\ud800')")
    nul = await executor.run("print('a\0b')")
    assert nul.returncode == 1 and "SyntaxError" in nul.stderr, "it arrives; Python refuses it"
    for env in ({"A=B": "1"}, {"": "1"}, {"A": "x\0y"}):
        with pytest.raises(ToolsError, match="cannot give the code the environment variable"):
            small(env=env)


async def test_runs_in_parallel_do_not_wait_for_each_other(executor):
    executor.timeout = 20
    code = "import time\nstart = time.time()\ntime.sleep(1.5)\nprint(start, time.time())"
    results = await asyncio.gather(*(executor.run(code) for _ in range(3)))
    spans = [[float(t) for t in r.stdout.split()] for r in results]
    assert max(start for start, _ in spans) < min(end for _, end in spans), "all ran at once"


async def test_cancelling_a_run_kills_it_and_leaves_no_control_group(executor):
    executor.timeout = 30
    sandbox = executor.sandbox()
    marker = f"AOPKIT_CANCEL_{os.getpid()}_{time.monotonic_ns()}"
    executor.env = {marker: "1"}
    task = asyncio.create_task(executor.run("import time\nprint('up', flush=True)\ntime.sleep(60)"))
    deadline = time.monotonic() + 30  # a bound for a loaded machine: it waits only for the start
    while not (pids := with_environment(marker)):
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert [p for p in pids if alive(p)] == []
    if sandbox.cgroup is not None:
        for parent in sandbox.cgroup.parents:
            assert not list(Path(parent).glob(f"aopkit-run-{os.getpid()}-*"))


async def test_a_run_that_fails_to_start_leaves_no_control_group(executor, monkeypatch):
    sandbox = executor.sandbox()
    if sandbox.cgroup is None:
        pytest.skip("no control group on this machine")

    def no_descriptors(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(bubblewrap_module, "command", no_descriptors)
    with pytest.raises(OSError, match="Too many open files"):
        await executor.run("print(1)")
    for parent in sandbox.cgroup.parents:
        assert not list(Path(parent).glob(f"aopkit-run-{os.getpid()}-*"))


def with_environment(marker):
    """The host processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# --- the refusal without bubblewrap, and the weaker mode ---------------------------------


async def test_without_bubblewrap_it_refuses_naming_the_package(monkeypatch, public_tmp):
    monkeypatch.setenv("PATH", str(public_tmp))
    executor = small()
    with pytest.raises(SandboxUnavailable) as caught:
        await executor.run("print(1)")
    message = str(caught.value)
    assert "install the 'bubblewrap' package" in message
    assert "isolation='unsafe-process'" in message


async def test_a_bubblewrap_that_cannot_start_is_a_clear_error(monkeypatch, public_tmp):
    broken = public_tmp / "bwrap"
    broken.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    monkeypatch.setattr(bubblewrap_module, "find", lambda: str(broken))
    with pytest.raises(SandboxUnavailable, match=r"does not start on this machine .*namespace"):
        small().sandbox()


def test_an_unknown_isolation_and_contradicting_options_are_refused():
    with pytest.raises(ToolsError, match="unknown isolation 'none'"):
        CodeExecutor(isolation="none")
    with pytest.raises(ToolsError, match="not both"):
        CodeExecutor(python="/usr/bin/python3", venv="/opt/venv")


async def test_the_unsafe_mode_runs_without_bubblewrap_when_asked(monkeypatch, public_tmp):
    monkeypatch.setenv("PATH", str(public_tmp))
    executor = small(isolation="unsafe-process")
    result = await executor.run(
        "import os\nprint(sorted(os.environ), os.path.basename(os.getcwd()))"
    )
    assert result.stdout == "['HOME', 'LANG', 'PATH', 'TMPDIR'] work\n"
    assert executor.sandbox().bwrap is None


async def test_the_unsafe_mode_kills_the_tree_at_the_timeout():
    executor = small(isolation="unsafe-process")
    marker = f"AOPKIT_UNSAFE_{os.getpid()}_{time.monotonic_ns()}"
    executor.env = {marker: "1"}
    code = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
time.sleep(60)
"""
    result = await executor.run(code)
    assert result.timed_out
    await asyncio.sleep(0.2)
    assert with_environment(marker) == []


@pytest.mark.skipif(not ROOT, reason="only a root program runs the code as another user")
async def test_as_root_an_unknown_or_root_user_is_refused():
    with pytest.raises(ToolsError, match="no such user"):
        CodeExecutor(user="no-such-user-aopkit").sandbox()
    with pytest.raises(ToolsError, match="which is root"):
        CodeExecutor(user="root").sandbox()


# --- control groups, and the fallback without them --------------------------------------


async def test_without_a_control_group_the_rlimits_bound_each_process(executor, monkeypatch):
    monkeypatch.setattr(execution_module, "find_place", lambda explicit: None)
    executor = small(max_processes=8)
    assert executor.sandbox().limits == "rlimits"
    memory = await executor.run("hoard = []\nwhile True:\n    hoard.append(' ' * 10**7)")
    assert memory.returncode == 1 and memory.stderr.rstrip().endswith("MemoryError")
    code = """
import os, time
made = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        made += 1
except OSError as exc:
    print(made, exc.strerror)
"""
    executor.timeout = 10
    runs = await asyncio.gather(executor.run(code), executor.run(code), executor.run(code))
    for forks in runs:  # each run has its own budget: they do not starve each other
        made, reason = forks.stdout.split(" ", 1)
        assert 4 <= int(made) < 8 and reason.strip() == "Resource temporarily unavailable"


def test_an_explicit_control_group_that_cannot_be_used_is_a_clear_error(tmp_path):
    with pytest.raises(ToolsError, match="cannot make the runs' control groups under"):
        cgroups_module.find_place(str(tmp_path))


@pytest.mark.skipif(not ROOT, reason="the v1 hierarchies are writable by root only")
def test_the_own_control_group_is_found_and_a_run_group_is_made_and_removed():
    place = cgroups_module.find_place()
    if place is None:
        pytest.skip("no writable control group on this machine")
    group = cgroups_module.RunCgroup(place, memory=64 * 2**20, processes=5)
    dirs = list(group.dirs)
    assert all(d.is_dir() for d in dirs) and len(group.procs_files) == len(dirs)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; open(sys.argv[1], 'w').write('0'); time.sleep(60)",
            group.procs_files[0],
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while child.pid not in group.pids():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        group.remove()
        assert child.wait(5) == -9, "what is left in the group is killed"
        assert not any(d.exists() for d in dirs)
    finally:
        child.kill()


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = (
    "35 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "36 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    "37 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
)


@pytest.mark.parametrize(
    ("cgroup", "mountinfo", "expected"),
    [
        (  # a modern host: only v2, the program in a systemd service
            "0::/system.slice/agent.service\n",
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" + V2_MOUNT,
            [(2, ("/sys/fs/cgroup/system.slice/agent.service",))],
        ),
        (  # a hybrid host (this project's CI): v2 mounted empty, the controllers on v1
            "4:memory:/process_api/abc\n8:pids:/\n1:cpu,cpuacct:/\n0::/\n",
            V1_MOUNTS + V2_MOUNT.replace("/sys/fs/cgroup ", "/sys/fs/cgroup/unified "),
            [
                (2, ("/sys/fs/cgroup/unified",)),
                (1, ("/sys/fs/cgroup/memory/process_api/abc", "/sys/fs/cgroup/pids")),
            ],
        ),
        (  # a container whose cgroup namespace shows its own group as the root
            "0::/\n",
            V2_MOUNT.replace(" / /sys", " /docker/c0ffee /sys"),
            [],
        ),
        ("0::/x\n", "", []),  # no cgroup file system mounted at all
    ],
)
def test_the_own_groups_are_read_from_proc(cgroup, mountinfo, expected):
    found = cgroups_module.candidates(cgroup, mountinfo)
    assert [(place.version, place.parents) for place in found] == expected


@pytest.fixture
def fake_cgroup2(tmp_path, monkeypatch):
    """A delegated cgroup v2 directory as the kernel shows it: making a group makes its
    interface files, and a group with a process in it cannot be removed. (This machine's v2
    hierarchy has no controllers, so the v2 code is tested against this.)"""
    root = tmp_path / "delegated"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("")
    interface = {
        "cgroup.procs": "",
        "cgroup.kill": "",
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.oom.group": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "pids.max": "max",
    }
    real_mkdir, real_rmdir = Path.mkdir, Path.rmdir

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self.parent == root:
            for name, text in interface.items():
                (self / name).write_text(text)

    def rmdir(self):
        if self.parent == root:
            if (self / "cgroup.procs").read_text().strip():
                raise OSError(16, "Device or resource busy")
            for name in interface:
                (self / name).unlink()
        real_rmdir(self)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "rmdir", rmdir)
    return root


def test_a_cgroup_v2_group_gets_the_limits_and_reports_kills(fake_cgroup2):
    place = cgroups_module.find_place(str(fake_cgroup2))
    assert place == cgroups_module.CgroupPlace(2, (str(fake_cgroup2),))
    assert (fake_cgroup2 / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert [p.name for p in fake_cgroup2.iterdir()] == ["cgroup.subtree_control"], "probe removed"
    group = cgroups_module.RunCgroup(place, memory=100 * 2**20, processes=7)
    [directory] = group.dirs
    assert (directory / "memory.max").read_text() == str(100 * 2**20)
    assert (directory / "memory.swap.max").read_text() == "0", "no swap beyond the limit"
    assert (directory / "memory.oom.group").read_text() == "1", "an OOM kills the whole run"
    assert (directory / "pids.max").read_text() == "7"
    assert group.procs_files == [str(directory / "cgroup.procs")]
    assert not group.memory_exceeded()
    (directory / "memory.events").write_text("oom 1\noom_kill 0\noom_group_kill 1\n")
    assert group.memory_exceeded()
    group.kill()
    assert (directory / "cgroup.kill").read_text() == "1"
    (directory / "cgroup.procs").write_text("999999999\n")  # a process that will not go
    group.remove(wait=0.1)
    assert directory.exists() and group.dirs == [directory], "left, not lost track of"
    (directory / "cgroup.procs").write_text("")
    group.remove()
    assert not directory.exists() and group.dirs == []


@pytest.mark.skipif(not ROOT, reason="the v1 hierarchies are writable by root only")
def test_groups_left_by_a_killed_program_are_removed_and_live_ones_kept():
    place = cgroups_module.find_place()
    if place is None:
        pytest.skip("no writable control group on this machine")
    dead = [Path(parent, "aopkit-run-999999999-0123456789ab") for parent in place.parents]
    live = cgroups_module.RunCgroup(place, memory=64 * 2**20, processes=5)
    try:
        for directory in dead:
            directory.mkdir()
        assert cgroups_module.find_place() == place
        assert not any(d.exists() for d in dead)
        assert all(d.exists() for d in live.dirs), "the running program's group stays"
    finally:
        live.remove()
        for directory in dead:
            if directory.exists():
                directory.rmdir()


# --- Python packages from a virtual environment -------------------------------------------


@needs_bwrap
async def test_a_virtual_environment_offers_its_packages_read_only(public_tmp):
    venv = public_tmp / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "offered_package.py").write_text("ANSWER = 42\n")
    executor = small(venv=venv)
    code = """
import offered_package, os, sys
print(offered_package.ANSWER, sys.prefix)
print(bool(os.statvfs(offered_package.__file__).f_flag & os.ST_RDONLY))
"""
    result = await executor.run(code)
    assert result.stdout.splitlines() == ["42 /venv", "True"]
    plain = await small().run("import offered_package")
    assert "ModuleNotFoundError" in plain.stderr, "only a run given the venv sees it"


def test_a_directory_that_is_not_a_venv_is_a_clear_error(tmp_path):
    with pytest.raises(ToolsError, match=r"is not a virtual environment: no pyvenv\.cfg"):
        small(venv=tmp_path).sandbox()


def test_every_escape_test_is_in_the_docs_table():
    """docs/tools.md counts the attacks: each test of the escape suite has its row."""
    suite = Path(__file__).with_name("test_sandbox_escapes.py").read_text()
    docs = (Path(__file__).parents[3] / "docs" / "tools.md").read_text()
    tests = set(re.findall(r"^async def (test_\w+)\(", suite, re.MULTILINE))
    rows = set(re.findall(r"^\| .* \| `(test_\w+)`", docs, re.MULTILINE))
    assert tests and tests <= rows, f"not in docs/tools.md: {sorted(tests - rows)}"
    claimed = re.search(r"\*\*0 escapes in (\d+) attacks\*\*", docs)
    assert claimed and int(claimed.group(1)) == len(rows)
