"""Files that survive crashes and concurrent writers: atomic replace, lock files, stale temps.

Every file aopkit rewrites (session stores, cassettes) goes through :func:`replace_atomically`
under :func:`locked`, so a reader sees the old file or the new one, never half of one, and
writers in other threads or processes take turns instead of losing each other's changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import tempfile
import threading
import time
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


class Held(Exception):
    """The claim file is locked by another holder (a process, or another task of this one)."""


_claimed: set[int] = set()  # the descriptors of the claims this process holds


def _close_claims_in_child() -> None:
    """A forked child drops its copies of the parent's claims: they die with the parent."""
    for fd in _claimed:
        with contextlib.suppress(OSError):
            os.close(fd)
    _claimed.clear()


os.register_at_fork(after_in_child=_close_claims_in_child)


async def claim(path: Path, *, wait: float = 0.0) -> int:
    """Lock ``path`` as an exclusive claim (release it with :func:`release`), or raise
    :class:`Held` once ``wait`` seconds have passed without getting it; the descriptor.

    An ``flock`` on a file of its own: the OS releases it when the holder dies, even by
    SIGKILL. Each claim opens the file anew, so two tasks or threads of one process exclude
    each other too. The holder removes the file when it is done; whoever locked a file that
    was removed meanwhile (it is no longer at ``path``) tries again, so removing never lets two
    holders in. Opened without following a symbolic link, and never truncated.
    """
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        fd = _try_claim(path)
        if fd is not None:
            return fd
        if time.monotonic() >= deadline:
            raise Held(path)
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.1)


def release(path: Path, fd: int) -> None:
    """Give up the claim :func:`claim` returned ``fd`` for."""
    _claimed.discard(fd)
    try:
        os.unlink(path)  # still ours: _try_claim checked it, and only a holder removes it
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _try_claim(path: Path) -> int | None:
    """The descriptor of ``path`` locked, or None if someone else holds it. Synchronous on
    purpose: no await between taking the lock and recording it, so a cancelled caller
    cannot leak one."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            found, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
            same = (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            _claimed.add(fd)
            return fd
        os.close(fd)  # its holder removed it after we opened it: take the new one
