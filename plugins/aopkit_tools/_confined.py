"""Paths resolved under a root without a race between checking and opening.

Each step opens one name relative to the directory reached so far, with ``O_NOFOLLOW``: a name
swapped for a symbolic link between two steps fails to open instead of being followed. Links
are read and followed here, one name at a time, and only while they stay under the root; so
what the caller finally opens (again relative to a directory it holds, with ``O_NOFOLLOW``) is
always inside the root, whatever other programs rename meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .errors import PathRefused

MAX_LINKS = 40  # symbolic links followed for one path, as Linux does
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Location:
    """Where a path leads: the name ``name`` in the open directory ``dir_fd`` (``"."``: that
    directory itself), its ``lstat`` (None if it does not exist) and its real place under the
    root, as the model should see it."""

    def __init__(self, dir_fd: int, name: str, info: os.stat_result | None, where: list[str]):
        self.dir_fd = dir_fd
        self.name = name
        self.info = info
        self.relative = "/".join(where) or "."

    def open_directory(self) -> int:
        """A new descriptor of the directory this location is."""
        if self.name == ".":
            return os.dup(self.dir_fd)
        return os.open(self.name, _DIRECTORY, dir_fd=self.dir_fd)


@contextlib.contextmanager
def located(
    root: Path, parts: list[str], shown: str, *, make_dirs: bool = False
) -> Iterator[Location]:
    """Walk ``parts`` from ``root`` and yield the location they lead to; the final name is
    never a symbolic link (links are followed), and ``make_dirs`` creates missing directories
    on the way. :class:`PathRefused` (naming the path as ``shown``) if a link leads outside the
    root or links loop; :class:`OSError` for what the file system says."""
    walk = _Walk(root, shown)
    try:
        yield walk.to(deque(parts), make_dirs)
    finally:
        os.close(walk.fd)


class _Walk:
    """One walk from the root; ``fd`` is the directory reached so far (always open)."""

    def __init__(self, root: Path, shown: str) -> None:
        self.root = root
        self.shown = shown
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.where: list[str] = []  # the real directories from the root to ``fd``
        self.links = 0

    def to(self, pending: deque[str], make_dirs: bool) -> Location:
        while pending:
            name = pending.popleft()
            if name in ("", "."):
                continue
            if name == "..":  # only from a link's target: the path itself may not hold ".."
                if not self.where:
                    raise self._outside()
                self._back(self.where[:-1])
                continue
            info = _lstat(name, self.fd)
            if info is not None and stat.S_ISLNK(info.st_mode):
                self._count_link()
                target = _read_link(name, self.fd)
                if target is None:  # no longer a link: look again
                    pending.appendleft(name)
                elif target.startswith("/"):
                    pending.extendleft(reversed(self._below_root(target)))
                    self._back([])
                else:
                    pending.extendleft(reversed(target.split("/")))
                continue
            if not pending:
                return Location(self.fd, name, info, [*self.where, name])
            if info is None and make_dirs:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=self.fd)
            try:
                inner = os.open(name, _DIRECTORY, dir_fd=self.fd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:  # ELOOP: swapped for a link since the lstat
                    raise
                self._count_link()
                pending.appendleft(name)
                continue
            os.close(self.fd)
            self.fd = inner
            self.where.append(name)
        return Location(self.fd, ".", os.fstat(self.fd), self.where)

    def _back(self, where: list[str]) -> None:
        """Go to the directory at ``where``, walked again from the root without links."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.close(self.fd)
        self.fd = fd
        self.where = []
        for name in where:
            inner = os.open(name, _DIRECTORY, dir_fd=self.fd)
            os.close(self.fd)
            self.fd = inner
            self.where.append(name)

    def _count_link(self) -> None:
        self.links += 1
        if self.links > MAX_LINKS:
            raise PathRefused(f"{self.shown}: symbolic links loop")

    def _below_root(self, target: str) -> list[str]:
        """The parts of an absolute link target below the root."""
        pure = PurePosixPath(target)
        if not pure.is_relative_to(self.root):
            raise self._outside()
        return list(pure.relative_to(self.root).parts)

    def _outside(self) -> PathRefused:
        return PathRefused(f"{self.shown}: a symbolic link leads outside the workspace; refused")


def _lstat(name: str, fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read_link(name: str, fd: int) -> str | None:
    """The target of a link, or None if ``name`` is no longer one."""
    try:
        return os.readlink(name, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return None
        raise
