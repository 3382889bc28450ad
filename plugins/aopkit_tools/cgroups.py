"""One control group per run: bounds the memory and the process count of the run's whole
process tree (rlimits bound each process alone), and kills the tree as a whole.

Version 2 needs a directory whose ``cgroup.subtree_control`` offers ``memory`` and ``pids``
(a delegated subtree); version 1 needs the ``memory`` and ``pids`` hierarchies writable (root).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

import attrs

from .errors import ToolsError

_CONTROLLERS = ("memory", "pids")
_PREFIX = "aopkit-run-"  # then the creating program's pid, so leftovers can be told apart


@attrs.frozen
class CgroupPlace:
    """Where the runs' groups are made: one parent directory (v2) or one per controller (v1,
    in the order of ``_CONTROLLERS``)."""

    version: int
    parents: tuple[str, ...]


def find_place(explicit: str | None = None) -> CgroupPlace | None:
    """The cgroup v2 directory ``explicit`` (an error if unusable), else this process's own
    cgroup (v2 first, then v1) if a group with limits can be made under it, else None."""
    if explicit is not None:
        place = CgroupPlace(2, (explicit,))
        problem = _try(place)
        if problem:
            raise ToolsError(
                f"cannot make the runs' control groups under {explicit!r}: {problem}; it must be "
                "a cgroup v2 directory this program may write, whose cgroup.subtree_control "
                "enables memory and pids (see docs/tools.md)"
            )
        _sweep(place)
        return place
    texts = []
    for source in ("/proc/self/cgroup", "/proc/self/mountinfo"):
        try:
            texts.append(Path(source).read_text())
        except OSError:
            return None
    for place in candidates(*texts):
        if not _try(place):
            _sweep(place)
            return place
    return None


def _sweep(place: CgroupPlace) -> None:
    """Remove the groups of programs that died before removing them (SIGKILL), killing what
    of their runs is still there or still exiting."""
    stale: dict[str, list[Path]] = {}  # a run's name -> its directories (one per v1 controller)
    for parent in place.parents:
        for group in Path(parent).glob(f"{_PREFIX}*-*"):
            owner = group.name[len(_PREFIX) :].split("-")[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                stale.setdefault(group.name, []).append(group)
    for dirs in stale.values():
        _remove(place.version, dirs, wait=1.0)


def candidates(cgroup: str, mountinfo: str) -> list[CgroupPlace]:
    """Our own groups, v2 first, from the texts of ``/proc/self/cgroup`` and
    ``/proc/self/mountinfo``."""
    own: dict[str, str] = {}  # controller ("" for v2) -> our group's path
    for line in cgroup.splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            own[name] = path
    mounts: dict[str, tuple[str, str]] = {}  # controller ("" for v2) -> (mount root, mount point)
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        root, point = fields.split()[3:5]
        kind, _, options = tail.split()[:3]
        if kind == "cgroup2":
            mounts.setdefault("", (root, point))
        elif kind == "cgroup":
            for name in set(options.split(",")) & set(_CONTROLLERS):
                mounts.setdefault(name, (root, point))
    found = []
    v2 = _directory(mounts.get(""), own.get(""))
    if v2 is not None:
        found.append(CgroupPlace(2, (v2,)))
    v1 = [_directory(mounts.get(name), own.get(name)) for name in _CONTROLLERS]
    if all(v1):
        found.append(CgroupPlace(1, tuple(d for d in v1 if d)))
    return found


def _directory(mount: tuple[str, str] | None, own: str | None) -> str | None:
    """The directory of cgroup ``own`` in a hierarchy mounted as ``mount``."""
    if mount is None or own is None:
        return None
    root, point = mount
    if own != root and not own.startswith(root.rstrip("/") + "/"):
        return None  # our group is outside what this mount shows
    return os.path.normpath(os.path.join(point, own[len(root) :].lstrip("/")))


def _try(place: CgroupPlace) -> str | None:
    """Make and remove a group with limits under ``place``; what went wrong, or None."""
    try:
        if place.version == 2:
            _enable_controllers(Path(place.parents[0]))
        group = RunCgroup(place, memory=2**30, processes=64)
    except OSError as exc:
        return exc.strerror or str(exc)
    group.remove()
    return None


def _enable_controllers(parent: Path) -> None:
    offered = (parent / "cgroup.subtree_control").read_text().split()
    missing = [name for name in _CONTROLLERS if name not in offered]
    if missing:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{n}" for n in missing))


class RunCgroup:
    """A fresh group (one per controller on v1) with the run's limits, removed by ``remove``."""

    def __init__(self, place: CgroupPlace, *, memory: int, processes: int) -> None:
        self.version = place.version
        name = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self.dirs: list[Path] = []
        try:
            for parent in place.parents:
                directory = Path(parent, name)
                directory.mkdir(mode=0o755)
                self.dirs.append(directory)
            if self.version == 2:
                self._write("memory.max", memory)
                self._write("memory.swap.max", 0, optional=True)
                self._write("memory.oom.group", 1, optional=True)
                self._write("pids.max", processes)
            else:
                self._write("memory.limit_in_bytes", memory)
                self._write("memory.memsw.limit_in_bytes", memory, optional=True)
                self._write("pids.max", processes)
        except BaseException:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid into to join (every controller)."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def _write(self, name: str, value: int, *, optional: bool = False) -> None:
        for directory in self.dirs:
            path = directory / name
            if path.exists():
                path.write_text(str(value))
                return
        if not optional:
            raise FileNotFoundError(2, f"no {name} (is the controller enabled?)", name)

    def _read(self, name: str) -> str:
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                return (directory / name).read_text()
        return ""

    def pids(self) -> set[int]:
        return _pids(self.dirs)

    def memory_exceeded(self) -> bool:
        """Did the kernel kill a process of the group for going over the memory limit?"""
        events = "memory.events" if self.version == 2 else "memory.oom_control"
        for line in self._read(events).splitlines():
            key, _, value = line.partition(" ")
            if key in {"oom_kill", "oom_group_kill"} and value.strip() not in {"", "0"}:
                return True
        return False

    def kill(self) -> None:
        """SIGKILL every process in the group, including ones that left the session."""
        _kill(self.version, self.dirs)

    def remove(self, wait: float = 3.0) -> None:
        """Kill what is left and remove the group once it is empty (blocks up to ``wait``)."""
        self.dirs = _remove(self.version, self.dirs, wait)


def _pids(dirs: list[Path]) -> set[int]:
    found: set[int] = set()
    for directory in dirs:
        with contextlib.suppress(OSError):
            found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return found


def _kill(version: int, dirs: list[Path]) -> None:
    kill_file = dirs[0] / "cgroup.kill" if version == 2 and dirs else None
    if kill_file is not None and kill_file.exists():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
            return
    for pid in _pids(dirs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _remove(version: int, dirs: list[Path], wait: float) -> list[Path]:
    """Kill what is left in the group's directories and remove them once empty (processes
    still exiting keep a group busy for a moment); the directories that are left."""
    deadline = time.monotonic() + wait
    for directory in reversed(dirs):
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break  # an empty group is left behind; it holds nothing
                _kill(version, dirs)
                time.sleep(0.01)
    return [d for d in dirs if d.exists()]
