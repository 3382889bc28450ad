"""Files that survive crashes and concurrent writers: atomic replace, lock files, stale temps.

Every file aopkit rewrites (session stores, cassettes) goes through :func:`replace_atomically`
under :func:`locked`, so a reader sees the old file or the new one, never half of one, and
writers in other threads or processes take turns instead of losing each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP_SUFFIX = ".tmp"
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def lock_path(path: Path) -> Path:
    """The lock file beside ``path``; it is never deleted (deleting a lock file races)."""
    return path.with_name(f".{path.name}.lock")


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(os.fspath(path), threading.Lock())


@contextmanager
def locked(path: Path, *, shared: bool = False, by_directory: bool = False) -> Iterator[None]:
    """Hold the lock of ``path``: exclusive to write it, ``shared`` to read it.

    An ``flock`` on the lock file (or, ``by_directory``, on the directory of ``path``, for files
    that live where a lock file would be litter) orders processes; a writer in this process
    also takes a thread lock first, so that threads queue here rather than in the kernel.
    While the lock is held, no writer is between writing a temporary file and renaming it:
    every temporary file of ``path`` left then is a crashed writer's, and is removed.
    """
    target = path.parent if by_directory else lock_path(path)
    thread_lock = None if shared else _thread_lock(target)
    if thread_lock is not None:
        thread_lock.acquire()
    try:
        flags = os.O_DIRECTORY if by_directory else os.O_CREAT
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            remove_stale_temps(path)
            yield
        finally:
            os.close(fd)  # closing releases the flock
    finally:
        if thread_lock is not None:
            thread_lock.release()


def remove_stale_temps(path: Path) -> None:
    """Remove temporary files a killed writer of ``path`` left; call it holding the lock."""
    prefix = _temp_prefix(path)
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(_TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):  # another reader removed it first
                os.unlink(path.parent / name)


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``
    and fsync the directory: after a crash ``path`` holds the old bytes or the new, whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_on_a_new_line(fd: int) -> None:
    """Before appending to a line-per-record file opened as ``fd`` (readable, in append mode):
    if a killed writer left a torn last line, end it, so that the next record does not fuse
    with it and get lost too."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")
