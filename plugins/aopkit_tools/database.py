"""SQL against one SQLite database: ``Database("shop.db").tools()``.

Read-only unless the program enables writing: the file is opened with ``mode=ro``, the
connection is ``query_only``, and an authorizer lets through only statements that read. Values
are always bound as parameters, never put into the SQL text.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aopkit import Tool

from .errors import QueryError

DATABASE_ENV = "AOPKIT_DATABASE"
_COUNT_LIMIT = 10_000  # rows counted past the shown ones, to say how many more there are
_READING = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
# Pragmas that take an argument and still only read: they describe the schema.
_SCHEMA_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
}
_READ_ONLY = (
    "refused: the database is read-only, and this statement would change it (the program "
    "can allow writes with Database(path, writable=True))"
)
_OTHER_FILES = "refused: ATTACH, DETACH and VACUUM INTO are not allowed (they open other files)"


class Database:
    """Runs the SQL a model writes against one SQLite file.

    ``path=None`` takes the file from the environment variable ``AOPKIT_DATABASE`` when first
    used. Results show at most ``max_rows`` rows, cells cut at ``max_cell`` characters; a
    statement running longer than ``timeout`` seconds is stopped. Calls are serialised.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        writable: bool = False,
        max_rows: int = 50,
        max_cell: int = 200,
        timeout: float = 10.0,
    ) -> None:
        self.path = path
        self.writable = writable
        self.max_rows = max_rows
        self.max_cell = max_cell
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._refusal: str | None = None  # why the authorizer or the clock stopped a statement
        self._deadline = 0.0
        self.tool = Tool(self.sql_query, group="database", thread=True)

    def tools(self) -> list[Tool]:
        return [self.tool]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def sql_query(self, sql: str, params: Any = None) -> str:
        """Run one SQLite statement and return its rows as a table. Put values in parameters,
        never in the SQL text. The database may be read-only.

        Args:
            sql: One SQL statement, with ? or :name placeholders for values.
            params: The values: a list for ? placeholders, an object for :name placeholders.
        """
        if params is None:
            params = ()
        elif not isinstance(params, (list, dict)):
            raise QueryError(
                "params must be a list (for ? placeholders) or an object (for :name "
                f"placeholders), not {type(params).__name__}"
            )
        with self._lock:
            connection = self._connect()
            self._refusal = None
            self._deadline = time.monotonic() + self.timeout
            try:
                cursor = connection.execute(sql, params)
                try:
                    if cursor.description is None:
                        changed = cursor.rowcount
                        return f"done; {changed} rows changed" if changed >= 0 else "done"
                    columns = [column[0] for column in cursor.description]
                    rows = cursor.fetchmany(self.max_rows)
                    more = len(cursor.fetchmany(_COUNT_LIMIT)) if len(rows) == self.max_rows else 0
                finally:
                    cursor.close()
            except (sqlite3.Error, sqlite3.Warning) as exc:  # Warning: several statements (3.10)
                raise QueryError(self._refusal or f"SQL error: {exc}") from None
        return _table(columns, rows, more, self.max_cell)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        path = self.path if self.path is not None else os.environ.get(DATABASE_ENV)
        if not path:
            raise QueryError(
                "no database is configured; the program can give one with Database(path) or "
                f"the environment variable {DATABASE_ENV}"
            )
        uri = Path(path).resolve().as_uri() + ("?mode=rwc" if self.writable else "?mode=ro")
        try:
            connection = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
            if not self.writable:
                connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise QueryError(f"cannot open the database {os.fspath(path)!r}: {exc}") from None
        connection.set_authorizer(self._authorize)
        connection.set_progress_handler(self._overtime, 1000)
        self._connection = connection
        return connection

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            self._refusal = _OTHER_FILES
            return sqlite3.SQLITE_DENY
        if (
            self.writable
            or action in _READING
            or (action == sqlite3.SQLITE_PRAGMA and (arg2 is None or arg1 in _SCHEMA_PRAGMAS))
        ):
            return sqlite3.SQLITE_OK
        self._refusal = _READ_ONLY
        return sqlite3.SQLITE_DENY

    def _overtime(self) -> int:
        if time.monotonic() < self._deadline:
            return 0
        self._refusal = f"stopped: the statement ran longer than {self.timeout:g} s"
        return 1


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], more: int, width: int) -> str:
    """A compact text table, then how many rows there are (and how many were left out)."""
    cells = [[_cell(value, width) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    lines = [
        " | ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip(),
        "-+-".join("-" * w for w in widths),
        *(
            " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells
        ),
    ]
    if more:
        count = f"at least {more}" if more == _COUNT_LIMIT else str(more)
        lines.append(f"({len(rows)} rows shown; {count} more not shown: narrow the query)")
    else:
        lines.append(f"({len(rows)} rows)")
    return "\n".join(lines)


def _cell(value: Any, width: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"
