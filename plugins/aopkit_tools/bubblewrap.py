"""The bubblewrap command line of one run: every namespace new, the system read-only, and
nothing else of the host but what the interpreter needs.

Inside: a fresh ``/proc`` and minimal ``/dev``; ``/usr`` (and ``/bin``, ``/lib*``) read-only;
of ``/etc`` only the loader's and the time zone's files, with a made-up ``passwd``, ``group``
and ``hosts``; private size-limited tmpfs at ``/work`` (the working directory, holding
``main.py``), ``/tmp``, ``/var/tmp`` and ``/dev/shm``; the rest of the root read-only and empty.
No host socket, ``/run``, ``/home``, ``/root``, ``/sys`` or host ``/tmp`` is mounted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence

from .errors import SandboxUnavailable

WORK = "/work"
VENV = "/venv"
UID = GID = 1000  # the code's user inside; outside it is the user that started bubblewrap
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
)
_FILES = {
    "/etc/passwd": f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{UID}:{GID}::{WORK}:/bin/sh\n"
    "nobody:x:65534:65534::/:/usr/sbin/nologin\n",
    "/etc/group": f"root:x:0:\nsandbox:x:{GID}:\nnogroup:x:65534:\n",
    "/etc/hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
}
_MISSING = (
    "code execution needs bubblewrap ('bwrap'), the sandbox it runs code in, and none was "
    "found on PATH; install the 'bubblewrap' package (Debian/Ubuntu: apt-get install "
    "bubblewrap), or opt into running code without a sandbox with "
    "CodeExecutor(isolation='unsafe-process') (see docs/tools.md for what that does not stop)"
)


def find() -> str:
    """The ``bwrap`` executable, or a ``SandboxUnavailable`` that says how to get it."""
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(_MISSING)
    return found


def under_system(path: str) -> bool:
    """Is ``path`` inside what every sandbox mounts anyway?"""
    real = os.path.realpath(path)
    return any(
        real == os.path.realpath(top) or real.startswith(os.path.realpath(top) + os.sep)
        for top in SYSTEM
        if os.path.lexists(top)
    )


def command(
    bwrap: str,
    *,
    program: Sequence[str],
    code: str,
    env: Mapping[str, str],
    binds: Mapping[str, str],
    disk_bytes: int,
) -> tuple[list[str], list[int]]:
    """The argv that runs ``program`` inside with ``code`` as ``/work/main.py``, and the file
    descriptors it reads (the caller passes them to the child and closes them after).
    ``binds`` maps host directories to where they appear, read-only."""
    fds: list[int] = []

    def data(text: str) -> str:
        fd = os.memfd_create("aopkit-sandbox-data")
        fds.append(fd)
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return str(fd)

    argv = [
        bwrap,
        *("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"),
        *("--unshare-uts", "--unshare-cgroup-try", "--disable-userns"),
        *("--uid", str(UID), "--gid", str(GID), "--hostname", "sandbox"),
        *("--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv"),
    ]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    for top in SYSTEM:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in ETC:
        argv += ["--ro-bind-try", path, path]
    for path, text in _FILES.items():
        argv += ["--ro-bind-data", data(text), path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    size = str(disk_bytes)
    for place in (WORK, "/tmp", "/var/tmp", "/dev/shm"):
        argv += ["--perms", "0700" if place == WORK else "1777", "--size", size, "--tmpfs", place]
    for source, target in binds.items():  # after the tmpfs, which would hide them
        argv += ["--ro-bind", source, target]
    argv += ["--perms", "0644", "--file", data(code), f"{WORK}/main.py"]
    argv += ["--remount-ro", "/", "--chdir", WORK, "--", *program]
    return argv, fds
