"""The escape suite: each test is an attack from inside the sandbox, and fails if the attack
works. docs/tools.md has the table of these attacks and their results."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from aopkit_tools import CodeExecutor, cgroups

from .test_execution import alive, with_environment

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(
        shutil.which("bwrap") is None,
        reason="no bubblewrap (see scripts/install-debian.sh)",
    ),
]

PROJECT = Path(__file__).parents[3]
SECRET = f"aopkit-secret-{uuid.uuid4().hex}"


# Run a test in the weaker mode too, where its attack must work: proof that the test notices.
against_no_sandbox = pytest.mark.parametrize(
    "executor",
    [
        "bubblewrap",
        pytest.param(
            "unsafe-process",
            marks=pytest.mark.xfail(strict=True, reason="no sandbox: the attack works"),
        ),
    ],
    indirect=True,
)


@pytest.fixture
def executor(request):
    """Small limits; every run carries a marker in its environment, so that the tests can
    look for anything of it left on the host."""
    marker = f"AOPKIT_ESCAPE_{uuid.uuid4().hex}"
    executor = CodeExecutor(
        enabled=True,
        isolation=getattr(request, "param", "bubblewrap"),
        timeout=3,
        cpu_seconds=2,
        memory_mb=128,
        max_processes=24,
        max_file_mb=2,
        max_disk_mb=8,
        max_output=4000,
        env={marker: "1"},
    )
    executor.marker = marker
    return executor


async def nothing_left(executor):
    """Nothing of the run is alive on the host (allowing the kernel a moment, longer when the
    machine is loaded: a process left alive waits out the bound and fails)."""
    deadline = time.monotonic() + 10
    while (left := [p for p in with_environment(executor.marker) if alive(p)]) and (
        time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    return not left


@pytest.fixture
def host_process():
    """A host process with the secret on its command line and in its environment."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", SECRET],
        env={**os.environ, "AOPKIT_HOST_SECRET": SECRET},
    )
    yield process
    process.kill()
    process.wait()


# --- other processes: the host's and another run's ----------------------------------------


@against_no_sandbox
async def test_host_processes_are_invisible_in_proc(executor, host_process):
    code = f"""
import os
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print(len(pids))
for pid in pids:
    for name in ("cmdline", "environ"):
        try:
            print(open(f"/proc/{{pid}}/{{name}}", "rb").read())
        except OSError:
            pass
for pid in ({host_process.pid}, {os.getpid()}, 1):
    print(pid, os.path.exists(f"/proc/{{pid}}/cmdline"))
"""
    result = await executor.run(code)
    assert result.ok, result.stderr
    assert int(result.stdout.split()[0]) <= 3, "only the run's own processes"
    assert SECRET not in result.stdout
    assert "sleep(60)" not in result.stdout


async def test_concurrent_runs_cannot_see_or_replace_each_other(executor):
    victim = f"""
import hashlib, os, time
source = open("main.py", "rb").read()
open("/work/private-{SECRET}", "w").write("{SECRET}")
open("/tmp/private-{SECRET}", "w").write("{SECRET}")
print("ready", flush=True)
time.sleep(1.5)
print(open("main.py", "rb").read() == source, sorted(os.listdir("/work")), os.listdir("/tmp"))
"""
    spy = f"""
import os
found = []
for top in ("/work", "/tmp", "/var/tmp", "/dev/shm", "/proc"):
    for root, dirs, files in os.walk(top):
        if root.startswith("/proc/") and root.count("/") > 3:
            dirs[:] = []
        for name in files + dirs:
            path = os.path.join(root, name)
            if "{SECRET}" in name:
                found.append(path)
            if name == "main.py" and path != "/work/main.py":
                found.append(path)
                try:
                    open(path, "w").write("print('hijacked')")
                except OSError:
                    pass
try:
    open("/work/main.py", "w").write("print('hijacked')")  # its own: allowed, private
except OSError:
    pass
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if b"{SECRET}" in open(f"/proc/{{pid}}/cmdline", "rb").read():
                found.append(pid)
        except OSError:
            pass
print(found)
"""
    executor.timeout = 10
    victim_run = asyncio.create_task(executor.run(victim))
    await asyncio.sleep(0.7)
    spying = await executor.run(spy)
    victim_result = await victim_run
    assert spying.stdout == "[]\n", spying.stdout + spying.stderr
    assert victim_result.stdout.splitlines()[1] == (
        f"True ['main.py', 'private-{SECRET}'] ['private-{SECRET}']"
    )


async def test_signals_cannot_reach_the_host(executor, host_process):
    # pid 1 inside is the sandbox's own init: a host parent that is pid 1 (a daemonised test
    # run) is not a host pid the sandbox could tell apart
    host_pids = [host_process.pid, os.getpid(), *[p for p in [os.getppid()] if p != 1]]
    code = f"""
import os, signal
for pid in {tuple(host_pids)}:
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent", pid)
    except OSError as exc:
        print(pid, type(exc).__name__)
print("parent", os.getppid(), flush=True)
os.kill(-1, signal.SIGKILL)
"""
    result = await executor.run(code)
    assert "ProcessLookupError" in result.stdout and "sent" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] == "parent 1", "its parent is the sandbox's init"
    assert host_process.poll() is None, "the host process is alive"
    await executor.run("import os, signal\nos.kill(1, signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)")
    assert host_process.poll() is None
    assert await nothing_left(executor)


async def test_ptrace_cannot_attach_to_host_processes(executor, host_process):
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for pid in ({host_process.pid}, {os.getpid()}):
    result = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
    print(pid, result, os.strerror(ctypes.get_errno()))
"""
    result = await executor.run(code)
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()] == [
        "-1 No such process",
        "-1 No such process",
    ]
    status = Path(f"/proc/{host_process.pid}/status").read_text()
    assert "TracerPid:\t0" in status


# --- the host's files, environment and sockets -------------------------------------------


async def test_the_parents_environment_is_not_inherited(executor, monkeypatch):
    monkeypatch.setenv("AOPKIT_TEST_SECRET", SECRET)
    code = """
import os
print(dict(os.environ))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print(open(f"/proc/{pid}/environ", "rb").read())
        except OSError as exc:
            print(exc)
"""
    result = await executor.run(code)
    assert result.ok and SECRET not in result.stdout
    assert "AOPKIT_TEST_SECRET" not in result.stdout


@pytest.fixture
def secret_files():
    """The secret in files in the program's home, temporary directory and project."""
    places = [
        Path.home() / f".aopkit-secret-{SECRET}",
        Path(tempfile.gettempdir()) / f"aopkit-secret-{SECRET}",
        PROJECT / f".aopkit-secret-{SECRET}",
    ]
    for place in places:
        place.write_text(SECRET)
    yield places
    for place in places:
        place.unlink()


@against_no_sandbox
async def test_the_parents_files_cannot_be_read(executor, secret_files):
    paths = [str(p) for p in secret_files] + [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/machine-id",
        "/root/.bash_history",
        str(PROJECT / "pyproject.toml"),
        "/proc/1/root/etc/hostname",
        "/sys/class/net",
        "/run",
        "/var/run",
        "/home",
    ]
    code = f"""
import os
for path in {paths!r}:
    print(os.path.exists(path), path)
for top in ("/", "/etc", "/var", "/dev"):
    print(top, sorted(os.listdir(top)))
"""
    result = await executor.run(code)
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("True")] == []
    assert SECRET not in result.stdout.replace(f"aopkit-secret-{SECRET}", "")
    listing = {
        top: set(eval(names)) for top, names in (line.split(" ", 1) for line in lines[len(paths) :])
    }
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"}
    assert listing["/"] <= system | {"dev", "etc", "proc", "tmp", "var", "work"}
    assert listing["/etc"] <= {
        "passwd",
        "group",
        "hosts",
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "localtime",
        "alternatives",
    }
    assert listing["/var"] == {"tmp"}
    assert listing["/dev"] <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "ptmx",
        "shm",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "core",
    }


async def test_no_file_descriptor_of_the_program_leaks_in(executor, secret_files):
    inherited = os.open(secret_files[1], os.O_RDONLY)
    os.set_inheritable(inherited, True)  # even one the program forgot to mark close-on-exec
    code = """
import os
for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
    try:
        print(fd, os.readlink(f"/proc/self/fd/{fd}"), os.pread(fd, 200, 0))
    except OSError as exc:
        print(fd, type(exc).__name__)
"""
    try:
        result = await executor.run(code)
    finally:
        os.close(inherited)
    assert SECRET not in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["0", "1", "2", "3"]


async def test_symlinks_in_the_work_directory_lead_nowhere_on_the_host(executor, secret_files):
    code = f"""
import os
targets = {[str(p) for p in secret_files]!r} + ["/etc/shadow", "/proc/1/root", "/root"]
for n, target in enumerate(targets):
    os.symlink(target, f"link{{n}}")
    try:
        print(open(f"link{{n}}").read()[:100])
    except OSError as exc:
        print(type(exc).__name__)
    try:
        open(f"link{{n}}", "w").write("overwritten")
    except OSError as exc:
        print(type(exc).__name__)
"""
    result = await executor.run(code)
    assert SECRET not in result.stdout
    assert all(p.read_text() == SECRET for p in secret_files)


async def test_writes_outside_the_private_places_fail_or_vanish(executor):
    name = f"aopkit-written-{SECRET}"
    targets = [
        Path(tempfile.gettempdir()) / name,
        Path("/tmp") / name,
        Path("/var/tmp") / name,
        Path("/dev/shm") / name,
        PROJECT / name,
        Path.home() / name,
        Path("/etc") / name,
        Path("/usr") / name,
        Path("/") / name,
    ]
    code = f"""
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError as exc:
        print(type(exc).__name__, path)
"""
    result = await executor.run(code)
    assert result.ok, result.stderr
    try:
        assert [t for t in targets if t.exists()] == []
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
    wrote = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("wrote")]
    assert set(wrote) <= {f"/dev/shm/{name}", f"/tmp/{name}", f"/var/tmp/{name}"}, (
        "only the private tmpfs take writes"
    )


async def test_temporary_directories_are_private_and_do_not_survive_a_run(executor):
    host_marker = Path("/dev/shm") / f"aopkit-host-{SECRET}"
    host_marker.write_text(SECRET)
    (Path(tempfile.gettempdir()) / f"aopkit-host-{SECRET}").write_text(SECRET)
    code = f"""
import os
for place in ("/work", "/tmp", "/var/tmp", "/dev/shm"):
    print(place, sorted(os.listdir(place)))
    open(os.path.join(place, "left-{SECRET}"), "w").write("x")
"""
    try:
        first = await executor.run(code)
        second = await executor.run(code)
    finally:
        host_marker.unlink()
        (Path(tempfile.gettempdir()) / f"aopkit-host-{SECRET}").unlink()
    expected = "/work ['main.py']\n/tmp []\n/var/tmp []\n/dev/shm []\n"
    assert first.stdout == second.stdout == expected


@pytest.fixture
def host_sockets():
    """World-writable listening Unix sockets on the host (in /tmp, in a private directory,
    and in the abstract namespace)."""
    made, paths = [], []
    directory = Path(tempfile.mkdtemp(prefix="aopkit-sock-"))
    directory.chmod(0o777)
    for path in (Path("/tmp") / f"aopkit-{uuid.uuid4().hex[:12]}.sock", directory / "s.sock"):
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        path.chmod(0o777)
        server.listen()
        server.setblocking(False)
        made.append(server)
        paths.append(str(path))
    abstract = socket.socket(socket.AF_UNIX)
    name = f"\0aopkit-{uuid.uuid4().hex}"
    abstract.bind(name)
    abstract.listen()
    abstract.setblocking(False)
    made.append(abstract)
    paths.append(name)
    yield paths, made
    for server in made:
        server.close()
    for path in paths[:2]:
        Path(path).unlink(missing_ok=True)
    shutil.rmtree(directory)


def accepted(servers):
    for server in servers:
        try:
            server.accept()[0].close()
            return True
        except BlockingIOError:
            pass
    return False


@against_no_sandbox
async def test_host_unix_sockets_are_unreachable(executor, host_sockets):
    paths, servers = host_sockets
    code = f"""
import socket
for path in {paths!r}:
    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(path)
        print("connected", repr(path))
    except OSError as exc:
        print(type(exc).__name__)
"""
    result = await executor.run(code)
    assert result.ok and "connected" not in result.stdout, result.stdout
    assert len(result.stdout.splitlines()) == 3
    assert not accepted(servers)


@against_no_sandbox
async def test_no_network_not_even_to_a_loopback_listener(executor):
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)
    anywhere = socket.create_server(("0.0.0.0", 0))
    anywhere.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("10.255.255.255", 1))  # no packet is sent: it picks the outgoing address
    host_ip = probe.getsockname()[0]
    probe.close()
    code = f"""
import socket
targets = [("127.0.0.1", {tcp.getsockname()[1]}), ("{host_ip}", {anywhere.getsockname()[1]})]
for host, port in targets + [("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=1)
        print("connected", host)
    except OSError as exc:
        print(type(exc).__name__, exc.strerror)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.sendto(b"{SECRET}", ("127.0.0.1", {udp.getsockname()[1]}))
print(sorted(name for _, name in socket.if_nameindex()))
"""
    try:
        result = await executor.run(code)
        await asyncio.sleep(0.1)
        assert not accepted([tcp, anywhere])
        with pytest.raises(BlockingIOError):
            udp.recvfrom(100)
    finally:
        for sock in (tcp, anywhere, udp):
            sock.close()
    assert result.ok, result.stderr
    assert "connected" not in result.stdout
    assert result.stdout.splitlines()[-1] == "['lo']"


async def test_sysv_shared_memory_of_the_host_is_invisible(executor):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x0A0B0000 + os.getpid() % 0xFFFF
    segment = libc.shmget(key, 4096, 0o1000 | 0o666)  # IPC_CREAT, world readable and writable
    assert segment >= 0
    try:
        code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.shmget({key}, 0, 0o666), open("/proc/sysvipc/shm").read().count("\\n"))
"""
        result = await executor.run(code)
    finally:
        libc.shmctl(segment, 0, None)  # IPC_RMID
    assert result.stdout == "-1 1\n", "no segment with that key, and none listed"


HOST_WITH_A_KEY = """
import asyncio, ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall(250, 1, None)  # a new session keyring for this program alone
secret = sys.argv[1].encode()
key = libc.syscall(248, b"user", b"aopkit-test", secret, len(secret), ctypes.c_long(-3))
ring = libc.syscall(250, 0, ctypes.c_long(-3), 0)
assert key > 0 and ring > 0, "add_key failed"
from aopkit_tools import CodeExecutor
code = sys.argv[2].replace("KEY", str(key)).replace("RING", str(ring))
print(asyncio.run(CodeExecutor(enabled=True, timeout=10).run(code)).report())
"""
READ_THE_KEYRING = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
buffer = ctypes.create_string_buffer(4096)
ring = libc.syscall(250, 0, ctypes.c_long(-3), 0)  # the session keyring
size = libc.syscall(250, 11, ctypes.c_long(ring), buffer, 4096)  # its keys
print("keys in the session keyring:", max(size, 0) // 4)
for key in (KEY, RING):  # the program's key and keyring, by number
    size = libc.syscall(250, 11, ctypes.c_long(key), buffer, 4096)
    print(key, size, buffer.raw[: max(size, 0)])
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the test calls keyctl by number")
async def test_the_programs_kernel_keyring_is_out_of_reach(tmp_path):
    """Namespaces do not separate kernel keyrings: a key in the program's session keyring."""
    done = subprocess.run(
        [sys.executable, "-c", HOST_WITH_A_KEY, SECRET, READ_THE_KEYRING],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "exit code 0" in done.stdout, done.stdout + done.stderr
    assert "keys in the session keyring: 0" in done.stdout
    assert SECRET not in done.stdout


# --- privileges ---------------------------------------------------------------------------


async def test_no_privileges_setuid_or_new_namespaces(executor):
    code = """
import os, subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(os.getuid(), os.geteuid(), status["CapEff"].strip(), status["CapBnd"].strip(),
      status["NoNewPrivs"].strip())
mounts = {line.split()[4]: line.split()[5] for line in open("/proc/self/mountinfo")}
print("nosuid" in mounts["/usr"], "ro" in mounts["/usr"].split(","))
commands = [["su", "-c", "id -u"], ["sudo", "-n", "id", "-u"], ["unshare", "-U", "-r", "id", "-u"]]
for command in commands:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=2)
        print(command[0], done.returncode, done.stdout.strip())
    except (OSError, subprocess.SubprocessError) as exc:
        print(command[0], type(exc).__name__)
"""
    result = await executor.run(code)
    lines = result.stdout.splitlines()
    assert lines[0] == "1000 1000 0000000000000000 0000000000000000 1"
    assert lines[1] == "True True"
    for line in lines[2:]:
        assert line.split()[1] != "0", f"this succeeded: {line}"


# --- resources ------------------------------------------------------------------------------


def needs_cgroup(executor):
    if executor.sandbox().cgroup is None:
        pytest.skip("no control group here: the rlimits fallback does not bound a tree")


async def test_a_fork_bomb_is_bounded_and_leaves_nothing(executor):
    code = """
import os, time
made = 0
while True:
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
    except OSError:
        print(made, flush=True)
        time.sleep(30)
"""
    result = await executor.run(code)
    assert result.timed_out
    assert int(result.stdout.split()[0]) < executor.max_processes
    assert await nothing_left(executor)
    assert subprocess.run(["true"], check=False).returncode == 0


async def test_a_memory_bomb_across_processes_is_killed_as_a_whole(executor):
    needs_cgroup(executor)
    code = """
import os, time
children = []
for n in range(4):
    pid = os.fork()
    if pid == 0:
        hoard = b"x" * (60 * 2**20)
        print("holding", n, flush=True)
        time.sleep(2)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("all done")
"""
    executor.timeout = 10
    result = await executor.run(code)
    assert result.stdout.count("holding") < 4 or "all done" not in result.stdout
    assert result.memory_exceeded
    assert await nothing_left(executor)


async def test_cpu_spinning_in_many_processes_ends(executor):
    code = """
import os
for n in range(3):
    if os.fork() == 0:
        break
while True:
    pass
"""
    started = time.monotonic()
    result = await executor.run(code)
    assert time.monotonic() - started < executor.timeout + 2
    assert not result.ok
    assert await nothing_left(executor)


async def test_sleeping_forever_is_stopped_at_the_wall_time(executor):
    started = time.monotonic()
    result = await executor.run("import time\ntime.sleep(3600)")
    assert result.timed_out and time.monotonic() - started < executor.timeout + 2
    assert await nothing_left(executor)


async def test_a_daemon_that_double_forks_and_calls_setsid_does_not_survive(executor):
    code = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(3600)
    os._exit(0)
print("parent leaves")
"""
    result = await executor.run(code)
    assert result.ok and result.stdout == "parent leaves\n"
    assert await nothing_left(executor)


async def test_killing_the_program_kills_the_sandbox(executor, tmp_path):
    """--die-with-parent: a program that dies (SIGKILL) takes its runs with it."""
    script = tmp_path / "host.py"
    script.write_text(
        f"""
import asyncio
from aopkit_tools import CodeExecutor, cgroups
executor = CodeExecutor(enabled=True, timeout=60, env={{"{executor.marker}": "1"}})
asyncio.run(executor.run("import time\\nprint('up', flush=True)\\ntime.sleep(3600)"))
"""
    )
    place = executor.sandbox().cgroup
    host = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 20
    while not with_environment(executor.marker):
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.05)
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert await nothing_left(executor)
    if place is not None:
        left = [g for p in place.parents for g in Path(p).glob(f"aopkit-run-{host.pid}-*")]
        assert left, "the dead program's group was left behind, empty"
        cgroups.find_place()  # the next program removes it
        assert not any(group.exists() for group in left)


async def test_output_flooding_is_cut_and_costs_no_memory(executor):
    code = """
import os, sys
chunk = b"y" * 2**16
for _ in range(800):
    os.write(1, chunk)
    os.write(2, chunk)
"""
    started = time.monotonic()
    result = await executor.run(code)
    assert time.monotonic() - started < executor.timeout + 2
    assert len(result.stdout) == len(result.stderr) == executor.max_output
    assert result.stdout_cut == 800 * 2**16 - executor.max_output
