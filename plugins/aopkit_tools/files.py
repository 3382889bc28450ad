"""Files confined to one workspace directory: ``Workspace("data").tools()``.

Every path a model gives is relative to the root; absolute paths, ``..`` and symbolic links
that resolve outside the root are refused. Writing is off unless the program enables it.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from aopkit import Tool

from .errors import FileToolError, NotEnabled, PathRefused

WORKSPACE_ENV = "AOPKIT_WORKSPACE"
_MAX_PATH = 4096
_MAX_NAME = 255  # bytes, as most file systems count
_SNIFF = 8192  # bytes looked at to tell binary from text
_LINE = 200  # characters of a matching line shown
_REASONS = {
    errno.ENOENT: "does not exist",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of it is not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "too many symbolic links",
    errno.ENOSPC: "no space left",
    errno.EFBIG: "the file is too large",
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
        self._root = None if root is None else _resolve_root(os.fspath(root))
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
            self._root = _resolve_root(configured)
        return self._root

    def tools(self) -> list[Tool]:
        """The tools for a toolkit: write_file only when the workspace is writable."""
        return list(self._tools)

    def locate(self, path: str) -> Path:
        """The real location of ``path`` inside the root, or :class:`PathRefused` saying why
        not. Symbolic links are followed, and where they lead must be inside the root too."""
        if "\x00" in path:
            raise PathRefused(f"{_quote(path)}: a path may not contain NUL bytes")
        if len(path) > _MAX_PATH:
            raise PathRefused(f"a path of {len(path)} characters is too long (at most {_MAX_PATH})")
        pure = PurePosixPath(path)
        if pure.is_absolute():
            raise PathRefused(
                f"{_quote(path)}: absolute paths are refused; give a path relative to the "
                "workspace root"
            )
        if ".." in pure.parts:
            raise PathRefused(f"{_quote(path)}: '..' is refused; paths stay inside the workspace")
        for part in pure.parts:
            if len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME:
                raise PathRefused(
                    f"{_quote(path)}: the name {_quote(part)} is longer than {_MAX_NAME} bytes"
                )
        root = self.root
        try:
            target = (root / pure).resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            raise PathRefused(f"{_quote(path)}: symbolic links loop") from None
        if not target.is_relative_to(root):
            raise PathRefused(
                f"{_quote(path)}: a symbolic link leads outside the workspace; refused"
            )
        return target

    def read_file(self, path: str, offset: int = 0) -> str:
        """Read a text file of the workspace. Long files come in parts: the end of each part
        says which offset reads on.

        Args:
            path: The file, relative to the workspace root (for example "notes/todo.txt").
            offset: Where to start, in bytes from the beginning of the file.
        """
        if offset < 0:
            raise FileToolError(f"offset must be 0 or more, not {offset}")
        target = self.locate(path)
        try:
            info = target.stat()
            _check_regular(path, info.st_mode)
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK)  # were it swapped for a FIFO
            with os.fdopen(fd, "rb") as file:
                file.seek(offset)
                data = file.read(self.max_read)
        except OSError as exc:
            raise _failed(path, exc) from None
        size = info.st_size
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
        data = content.encode("utf-8")
        if len(data) > self.max_write:
            raise FileToolError(
                f"{_quote(path)}: the content is {len(data)} bytes; at most {self.max_write}"
            )
        target = self.locate(path)
        if target == self.root:
            raise FileToolError(f"{_quote(path)}: that is the workspace root, not a file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        except OSError as exc:
            raise _failed(path, exc) from None
        return f"wrote {len(data)} bytes to {self._relative(target)}"

    def list_files(self, path: str = ".", recursive: bool = False) -> str:
        """List a directory of the workspace: directories end with "/", files show their size.

        Args:
            path: The directory, relative to the workspace root ("." is the root).
            recursive: Also list what is inside the subdirectories.
        """
        target = self.locate(path)
        _check_directory(path, target)
        lines: list[str] = []
        try:
            for entry in _walk(target, recursive):
                if len(lines) == self.max_entries:
                    lines.append(f"[stopped at {self.max_entries} entries; list a subdirectory]")
                    break
                lines.append(self._entry(entry))
        except OSError as exc:
            raise _failed(path, exc) from None
        return "\n".join(lines) if lines else f"{self._relative(target)} is empty"

    def search_files(self, query: str, path: str = ".", regex: bool = False) -> str:
        """Find the lines of the workspace's text files that contain the query. Each match
        comes as "file:line: text".

        Args:
            query: The text to look for (case-sensitive), or a Python regular expression if
                regex is true.
            path: The file or directory to search, relative to the workspace root.
            regex: Treat the query as a regular expression.
        """
        if not query:
            raise FileToolError("the query is empty; give some text to look for")
        try:
            pattern = re.compile(query if regex else re.escape(query))
        except re.error as exc:
            raise FileToolError(f"the query is not a valid regular expression: {exc}") from None
        target = self.locate(path)
        if not target.is_file():
            _check_directory(path, target)
        matches: list[str] = []
        skipped = 0
        for file in [target] if target.is_file() else _walk(target, True):
            found = self._search(file, pattern)
            if found is None:
                skipped += 1
                continue
            for number, line in found:
                if len(matches) == self.max_matches:
                    matches.append(f"[stopped at {self.max_matches} matches; narrow the search]")
                    return "\n".join(matches)
                matches.append(f"{self._relative(file)}:{number}: {line}")
        if not matches:
            matches.append(f"no matches for {query!r}")
        if skipped:
            matches.append(f"[{skipped} files were not searched: binary, too large or unreadable]")
        return "\n".join(matches)

    def _search(self, file: Path, pattern: re.Pattern[str]) -> list[tuple[int, str]] | None:
        """The matching lines of one file: None if it is binary, too large or unreadable, none
        if it is not a regular file inside the root."""
        try:
            if file.is_symlink() and not file.resolve().is_relative_to(self.root):
                return []
            if not file.is_file():
                return []
            if file.stat().st_size > self.max_search_bytes:
                return None
            text = _decode(file.read_bytes(), final=True)
        except (OSError, RuntimeError):  # unreadable, or a symlink loop
            return None
        if text is None:
            return None
        return [
            (number, line.strip()[:_LINE])
            for number, line in enumerate(text.splitlines(), 1)
            if pattern.search(line)
        ]

    def _entry(self, entry: Path) -> str:
        name = self._relative(entry)
        if entry.is_symlink():
            return f"{name} (symbolic link)"
        if entry.is_dir():
            return f"{name}/"
        return f"{name} ({entry.stat().st_size} bytes)"

    def _relative(self, target: Path) -> str:
        """A location as the model should see it: relative to the root."""
        relative = target.relative_to(self.root) if target.is_relative_to(self.root) else target
        return relative.as_posix()


def _resolve_root(root: str) -> Path:
    resolved = Path(root).resolve()
    if not resolved.is_dir():
        raise FileToolError(f"the workspace root {root!r} is not a directory")
    return resolved


def _walk(top: Path, recursive: bool) -> Iterator[Path]:
    """The entries under ``top``, each directory's sorted; symbolic links to directories are
    listed, not entered; unreadable subdirectories are left out."""
    if not recursive:
        yield from sorted(top.iterdir())
        return
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        yield from sorted(Path(folder, name) for name in [*dirs, *files])


def _check_directory(path: str, target: Path) -> None:
    if not target.is_dir():
        problem = "is not a directory" if target.exists() else "does not exist"
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
    return repr(path) if len(path) <= 100 else f"{path[:100]!r}..."
