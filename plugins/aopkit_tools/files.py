"""Files confined to one workspace directory: ``Workspace("data").tools()``.

Every path a model gives is relative to the root; absolute paths and ``..`` are refused, and
symbolic links are followed only while they stay inside the root. Paths are walked one name at
a time from the root (see :mod:`._confined`), so nothing renamed meanwhile can lead a read or a
write outside. Writes replace a file whole: readers see the old content or the new, never a
part. Writing is off unless the program enables it.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from aopkit import Tool

from ._confined import Location, located
from .errors import FileToolError, NotEnabled, PathRefused

WORKSPACE_ENV = "AOPKIT_WORKSPACE"
_MAX_PATH = 4096
_MAX_NAME = 255  # bytes, as most file systems count
_SNIFF = 8192  # bytes looked at to tell binary from text
_LINE = 200  # characters of a matching line shown
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REASONS = {
    errno.ENOENT: "does not exist",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of it is not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "it changed into a symbolic link while it was opened; try again",
    errno.ENOSPC: "no space left",
    errno.EDQUOT: "no space left",
    errno.EFBIG: "the file is too large",
    errno.EROFS: "the file system is read-only",
}


class Workspace:
    """Read, list and search (and, if ``writable``, write) files under ``root``.

    ``root=None`` takes the directory from the environment variable ``AOPKIT_WORKSPACE`` when
    first used. Reads show at most ``max_read`` bytes at a time; searches stop at
    ``max_matches`` matches and skip files larger than ``max_search_bytes``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        writable: bool = False,
        max_read: int = 64_000,
        max_write: int = 1_000_000,
        max_entries: int = 200,
        max_matches: int = 50,
        max_search_bytes: int = 2_000_000,
    ) -> None:
        self.writable = writable
        self.max_read = max_read
        self.max_write = max_write
        self.max_entries = max_entries
        self.max_matches = max_matches
        self.max_search_bytes = max_search_bytes
        self._root = None if root is None else _resolve_root(os.fspath(root), repr(root))
        functions: list[Callable[..., str]] = [self.read_file, self.list_files, self.search_files]
        if writable:
            functions.append(self.write_file)
        self._tools = [Tool(f, group="files", thread=True) for f in functions]

    @property
    def root(self) -> Path:
        if self._root is None:
            configured = os.environ.get(WORKSPACE_ENV)
            if not configured:
                raise FileToolError(
                    "no workspace is configured; the program can give one with "
                    f"Workspace(root) or the environment variable {WORKSPACE_ENV}"
                )
            self._root = _resolve_root(configured, f"given by {WORKSPACE_ENV}")
        return self._root

    def tools(self) -> list[Tool]:
        """The tools for a toolkit: write_file only when the workspace is writable."""
        return list(self._tools)

    def read_file(self, path: str, offset: int = 0) -> str:
        """Read a text file of the workspace. Long files come in parts: the end of each part
        says which offset reads on.

        Args:
            path: The file, relative to the workspace root (for example "notes/todo.txt").
            offset: Where to start, in bytes from the beginning of the file.
        """
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise FileToolError(f"offset must be a whole number, not {type(offset).__name__}")
        if offset < 0:
            raise FileToolError(f"offset must be 0 or more, not {offset}")
        with self._located(path) as at:
            _check_file(path, at)
            with _open_regular(at.dir_fd, at.name, path) as (fd, size):
                if offset > size:
                    raise FileToolError(
                        f"offset {offset} is past the end of {_quote(path)} ({size} bytes)"
                    )
                data = os.pread(fd, self.max_read, offset)
        start = _char_start(data)
        text = _decode(data[start:], final=offset + len(data) >= size)
        if text is None:
            return f"{_quote(path)} is a binary file of {size} bytes (not UTF-8 text); not shown"
        end = offset + start + len(text.encode("utf-8"))
        if offset == 0 and end >= size:
            return text
        shown = f"[bytes {offset + start}-{end} of {size}"
        if end >= size:
            return f"{text}\n{shown}: the end of the file]"
        return f"{text}\n{shown} shown; read on with offset={end}]"

    def write_file(self, path: str, content: str) -> str:
        """Write a text file in the workspace, replacing it if it exists. Missing directories
        are created.

        Args:
            path: The file, relative to the workspace root.
            content: The whole new text of the file.
        """
        if not self.writable:
            raise NotEnabled(
                "writing is off in this workspace; the program can enable it with "
                "Workspace(root, writable=True)"
            )
        data = _encode(content, "the content")
        if len(data) > self.max_write:
            raise FileToolError(
                f"{_quote(path)}: the content is {len(data)} bytes; at most {self.max_write}"
            )
        with self._located(path, make_dirs=True) as at:
            if at.name == "." and at.relative == ".":
                raise FileToolError(f"{_quote(path)}: that is the workspace root, not a file")
            if at.info is not None:
                _check_regular(path, at.info.st_mode)
            _replace(at, data)
            return f"wrote {len(data)} bytes to {_shown(at.relative)}"

    def list_files(self, path: str = ".", recursive: bool = False) -> str:
        """List a directory of the workspace: directories end with "/", files show their size.

        Args:
            path: The directory, relative to the workspace root ("." is the root).
            recursive: Also list what is inside the subdirectories.
        """
        lines: list[str] = []
        with self._located(path) as at:
            _check_directory(path, at)
            with _opened(at.open_directory()) as fd:
                for relative, info, _, _ in _entries(fd, _prefix(at), bool(recursive)):
                    if len(lines) == self.max_entries:
                        lines.append(
                            f"[stopped at {self.max_entries} entries; list a subdirectory]"
                        )
                        break
                    lines.append(_entry(relative, info))
            return "\n".join(lines) if lines else f"{_shown(at.relative)} is empty"

    def search_files(self, query: str, path: str = ".", regex: bool = False) -> str:
        """Find the lines of the workspace's text files that contain the query. Each match
        comes as "file:line: text".

        Args:
            query: The text to look for (case-sensitive), or a Python regular expression if
                regex is true.
            path: The file or directory to search, relative to the workspace root.
            regex: Treat the query as a regular expression.
        """
        _encode(query, "the query")
        if not query:
            raise FileToolError("the query is empty; give some text to look for")
        try:
            pattern = re.compile(query if regex else re.escape(query))
        except re.error as exc:
            raise FileToolError(f"the query is not a valid regular expression: {exc}") from None
        matches: list[str] = []
        skipped = 0
        searched = contextlib.closing(self._searched(path, pattern))  # closes what it opened
        with searched as files:
            for relative, found in files:
                if found is None:
                    skipped += 1
                    continue
                for number, line in found:
                    if len(matches) == self.max_matches:
                        matches.append(
                            f"[stopped at {self.max_matches} matches; narrow the search]"
                        )
                        return "\n".join(matches)
                    matches.append(f"{_shown(relative)}:{number}: {line}")
        if not matches:
            matches.append(f"no matches for {query!r}")
        if skipped:
            matches.append(f"[{skipped} files were not searched: binary, too large or unreadable]")
        return "\n".join(matches)

    def _searched(
        self, path: str, pattern: re.Pattern[str]
    ) -> Generator[tuple[str, list[tuple[int, str]] | None], None, None]:
        """Each file under ``path`` with its matching lines (None: binary, too large or
        unreadable); links to files are followed while they stay inside the root."""
        with self._located(path) as at:
            if at.info is not None and not stat.S_ISDIR(at.info.st_mode):
                _check_regular(path, at.info.st_mode)
                yield at.relative, self._search(at.dir_fd, at.name, pattern)
                return
            _check_directory(path, at)
            with _opened(at.open_directory()) as top:
                for relative, info, dir_fd, name in _entries(top, _prefix(at), True):
                    if stat.S_ISREG(info.st_mode):
                        yield relative, self._search(dir_fd, name, pattern)
                    elif stat.S_ISLNK(info.st_mode):
                        found = self._search_link(relative, pattern)
                        if found is None or found:
                            yield relative, found

    def _search_link(self, relative: str, pattern: re.Pattern[str]) -> list[tuple[int, str]] | None:
        """A link is searched if it leads to a file inside the root; else it is not a file."""
        try:
            with located(self.root, relative.split("/"), _quote(relative)) as at:
                if at.info is None or not stat.S_ISREG(at.info.st_mode):
                    return []
                return self._search(at.dir_fd, at.name, pattern)
        except PathRefused:
            return []
        except OSError:
            return None

    def _search(
        self, dir_fd: int, name: str, pattern: re.Pattern[str]
    ) -> list[tuple[int, str]] | None:
        """The matching lines of one file: None if it is binary, too large or unreadable, none
        if it is not a regular file."""
        try:
            with _open_regular(dir_fd, name, name) as (fd, size):
                if size > self.max_search_bytes:
                    return None
                data = os.pread(fd, self.max_search_bytes + 1, 0)
        except FileToolError:
            return []
        except OSError:
            return None
        text = _decode(data, final=True)
        if text is None:
            return None
        return [
            (number, line.strip()[:_LINE])
            for number, line in enumerate(text.splitlines(), 1)
            if pattern.search(line)
        ]

    @contextlib.contextmanager
    def _located(self, path: str, *, make_dirs: bool = False) -> Iterator[Location]:
        """Where ``path`` leads; a file-system error here or in the ``with`` block becomes a
        :class:`FileToolError` that names the path as the model gave it."""
        parts = _parts(path)
        try:
            with located(self.root, parts, _quote(path), make_dirs=make_dirs) as at:
                yield at
        except OSError as exc:
            raise _failed(path, exc) from None


def _parts(path: str) -> list[str]:
    """The names of a path a model gave, or :class:`PathRefused` saying what is wrong."""
    if not isinstance(path, str):
        raise PathRefused(f"a path must be text, not {type(path).__name__}")
    if "\x00" in path:
        raise PathRefused(f"{_quote(path)}: a path may not contain NUL bytes")
    if len(path) > _MAX_PATH:
        raise PathRefused(f"a path of {len(path)} characters is too long (at most {_MAX_PATH})")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PathRefused(
            f"{_quote(path)}: not valid text (a lone surrogate at character {exc.start})"
        ) from None
    if path.startswith("/"):
        raise PathRefused(
            f"{_quote(path)}: absolute paths are refused; give a path relative to the "
            "workspace root"
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"{_quote(path)}: '..' is refused; paths stay inside the workspace")
    for part in parts:
        if len(part.encode("utf-8")) > _MAX_NAME:
            raise PathRefused(
                f"{_quote(path)}: the name {_quote(part)} is longer than {_MAX_NAME} bytes"
            )
    return parts


def _encode(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise FileToolError(f"{what} must be text, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FileToolError(
            f"{what} is not valid text: a lone surrogate {text[exc.start]!a} at character "
            f"{exc.start}"
        ) from None


def _replace(at: Location, data: bytes) -> None:
    """Write ``data`` to a new file beside the target, then rename it over the target: the
    target holds the old content or the new, whatever fails or runs meanwhile."""
    temporary = f".{secrets.token_hex(8)}.aopkit-tmp"
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
        dir_fd=at.dir_fd,
    )
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if at.info is not None:  # keep the replaced file's permissions
                os.fchmod(file.fileno(), stat.S_IMODE(at.info.st_mode))
            os.fsync(file.fileno())
        os.rename(temporary, at.name, src_dir_fd=at.dir_fd, dst_dir_fd=at.dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=at.dir_fd)
        raise
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        os.fsync(at.dir_fd)  # the rename itself survives a crash


@contextlib.contextmanager
def _open_regular(dir_fd: int, name: str, path: str) -> Iterator[tuple[int, int]]:
    """An open regular file and its size; :class:`FileToolError` for anything else (checked
    on the open file, so nothing swapped in after a check is read)."""
    with _opened(os.open(name, _READ, dir_fd=dir_fd)) as fd:
        info = os.fstat(fd)
        _check_regular(path, info.st_mode)
        yield fd, info.st_size


@contextlib.contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _entries(
    top: int, prefix: str, recursive: bool
) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """The entries under the open directory ``top``, each directory's sorted: each one's path
    under the root, its ``lstat``, and the directory (open while the entry is looked at) and
    name to open it by. If ``recursive``, a directory's subdirectories follow it, depth first;
    links are listed, not entered; unreadable subdirectories are left out. One directory is
    open at a time, however deep the tree."""
    pending: list[list[str]] = [[]]  # directories to list, as names below ``top``
    while pending:
        names = pending.pop()
        try:
            fd = _open_below(top, names)
        except OSError:
            if not names:
                raise
            continue
        with _opened(fd):
            with os.scandir(fd) as scan:
                found = sorted((entry.name, entry.stat(follow_symlinks=False)) for entry in scan)
            here = prefix + "".join(f"{name}/" for name in names)
            for name, info in found:
                yield here + name, info, fd, name
        if recursive:
            inner = [[*names, name] for name, info in found if stat.S_ISDIR(info.st_mode)]
            pending.extend(reversed(inner))


def _open_below(top: int, names: list[str]) -> int:
    """A new descriptor of the directory ``names`` below ``top``, no link followed."""
    fd = os.dup(top)
    for name in names:
        with _opened(fd):
            fd = os.open(name, _DIRECTORY, dir_fd=fd)
    return fd


def _entry(relative: str, info: os.stat_result) -> str:
    name = _shown(relative)
    if stat.S_ISLNK(info.st_mode):
        return f"{name} (symbolic link)"
    if stat.S_ISDIR(info.st_mode):
        return f"{name}/"
    if not stat.S_ISREG(info.st_mode):
        return f"{name} (not a regular file)"
    return f"{name} ({info.st_size} bytes)"


def _prefix(at: Location) -> str:
    return "" if at.relative == "." else at.relative + "/"


def _shown(name: str) -> str:
    """A name as the model sees it: bytes that are not UTF-8 appear as \\x escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _resolve_root(root: str, described: str) -> Path:
    resolved = Path(root).resolve()
    if not resolved.is_dir():
        raise FileToolError(f"the workspace root {described} is not a directory")
    return resolved


def _check_file(path: str, at: Location) -> None:
    if at.info is None:
        raise FileToolError(f"{_quote(path)}: does not exist")
    _check_regular(path, at.info.st_mode)


def _check_directory(path: str, at: Location) -> None:
    if at.info is None or not stat.S_ISDIR(at.info.st_mode):
        problem = "is not a directory" if at.info is not None else "does not exist"
        raise FileToolError(f"{_quote(path)} {problem}")


def _check_regular(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise FileToolError(f"{_quote(path)} is a directory; list_files shows what is in it")
    if not stat.S_ISREG(mode):
        raise FileToolError(f"{_quote(path)} is not a regular file")


def _decode(data: bytes, final: bool) -> str | None:
    """The text of UTF-8 ``data`` (a character cut at the end is left for the next read), or
    None for binary data: a NUL byte, or bytes that are not UTF-8."""
    if b"\x00" in data[:_SNIFF]:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError:
        return None


def _char_start(data: bytes) -> int:
    """Skip UTF-8 continuation bytes an offset may have landed in."""
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
        start += 1
    return start


def _failed(path: str, exc: OSError) -> FileToolError:
    """A file error that names the path as given: the absolute path is not the model's
    business."""
    reason = _REASONS.get(exc.errno or 0, exc.strerror or "cannot be used")
    return FileToolError(f"{_quote(path)}: {reason}")


def _quote(path: str) -> str:
    text = repr(path) if len(path) <= 100 else f"{path[:100]!r}..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
