"""SQL against one SQLite database: ``Database("shop.db").tools()``.

Read-only unless the program enables writing: the file is opened with ``mode=ro``, the
connection is ``query_only``, and an authorizer lets through only statements that read. In
every mode the authorizer allows only the SQL functions and pragmas named in
:mod:`._sql_policy`, and SQLite's limits bound how large a value or a row may grow. Values are
always bound as parameters, never put into the SQL text.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aopkit import Tool

from ._sql_policy import Policy
from .errors import QueryError

DATABASE_ENV = "AOPKIT_DATABASE"
_COUNT_LIMIT = 10_000  # rows counted past the shown ones, to say how many more there are
MAX_COLUMNS = 100  # result columns of one statement: with max_bytes, bounds one row's memory


class Database:
    """Runs the SQL a model writes against one SQLite file.

    ``path=None`` takes the file from the environment variable ``AOPKIT_DATABASE`` when first
    used. Results show at most ``max_rows`` rows, cells cut at ``max_cell`` characters; no
    string or blob a statement builds or reads may exceed ``max_bytes``; a statement running
    longer than ``timeout`` seconds is stopped. Calls are serialised.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        writable: bool = False,
        max_rows: int = 50,
        max_cell: int = 200,
        max_bytes: int = 1_000_000,
        timeout: float = 10.0,
    ) -> None:
        self.path = path
        self.writable = writable
        self.max_rows = max_rows
        self.max_cell = max_cell
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._policy = Policy(writable)
        self._deadline = 0.0
        self._overran = False
        self.tool = Tool(self.sql_query, group="database", thread=True)

    def tools(self) -> list[Tool]:
        return [self.tool]

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def sql_query(self, sql: str, params: Any = None) -> str:
        """Run one SQLite statement and return its rows as a table. Put values in parameters,
        never in the SQL text. The database may be read-only.

        Args:
            sql: One SQL statement, with ? or :name placeholders for values.
            params: The values: a list for ? placeholders, an object for :name placeholders.
        """
        if not isinstance(sql, str):
            raise QueryError(f"sql must be text, not {type(sql).__name__}")
        if params is None:
            params = ()
        elif not isinstance(params, (list, dict)):
            raise QueryError(
                "params must be a list (for ? placeholders) or an object (for :name "
                f"placeholders), not {type(params).__name__}"
            )
        _check_text(sql, "the SQL")
        with self._lock:
            try:
                return self._run(sql, params)
            except sqlite3.Error as exc:
                if "malformed database schema" not in str(exc):
                    raise QueryError(self._explain(exc)) from None
            # Another connection changed the schema and a table is wider than the column limit
            # allows: a fresh connection reads the schema before the limit is set.
            self._disconnect()
            try:
                return self._run(sql, params)
            except sqlite3.Error as exc:
                raise QueryError(self._explain(exc)) from None

    def _run(self, sql: str, params: list[Any] | dict[str, Any]) -> str:
        connection = self._connect()
        self._policy.refusal = None
        self._overran = False
        self._deadline = time.monotonic() + self.timeout
        try:
            cursor = connection.execute(sql, params)
        except (sqlite3.Warning, OverflowError, UnicodeEncodeError) as exc:
            # Warning: several statements (3.10); the others: a value SQLite cannot take.
            raise QueryError(f"SQL error: {exc}") from None
        try:
            if cursor.description is None:
                changed = cursor.rowcount
                return f"done; {changed} rows changed" if changed >= 0 else "done"
            columns = [_cell(column[0], self.max_cell) for column in cursor.description]
            rows: list[list[str]] = []
            more = 0
            for row in cursor:  # one row at a time: a row is rendered, or counted, then dropped
                if len(rows) < self.max_rows:
                    rows.append([_cell(value, self.max_cell) for value in row])
                    continue
                more += 1
                if more == _COUNT_LIMIT:
                    break
        finally:
            cursor.close()
        return _table(columns, rows, more)

    def _explain(self, exc: sqlite3.Error) -> str:
        """What the model is told: why the statement was refused or stopped, else SQLite's
        error (its texts name no files)."""
        if self._policy.refusal:
            return self._policy.refusal
        if self._overran:
            return f"stopped: the statement ran longer than {self.timeout:g} s"
        text = str(exc)
        if text == "string or blob too big":
            return (
                f"refused: a value would be larger than {self.max_bytes} bytes, the most this "
                "tool lets one string or blob be"
            )
        if text == "too many columns in result set":
            return f"refused: a result may have at most {MAX_COLUMNS} columns; name fewer"
        return f"SQL error: {text}"

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
        except sqlite3.Error as exc:
            # The path is the program's business, not the model's: it is not shown.
            raise QueryError(f"cannot open the database the program configured: {exc}") from None
        try:
            if not self.writable:
                connection.execute("PRAGMA query_only = ON")
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 0")  # reads the schema
        except sqlite3.Error as exc:
            connection.close()
            raise QueryError(f"cannot read the database the program configured: {exc}") from None
        self._limit(connection)
        connection.set_authorizer(self._policy.authorize)
        connection.set_progress_handler(self._overtime, 1000)
        self._connection = connection
        return connection

    def _limit(self, connection: sqlite3.Connection) -> None:
        """Bound what one statement can allocate. ``setlimit`` is Python 3.11+; on 3.10 only
        the time limit and the result caps apply (see docs/tools.md)."""
        if sys.version_info < (3, 11):
            return
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_bytes)
        connection.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, min(self.max_bytes, 100_000))
        connection.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)  # after the schema was read
        connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _overtime(self) -> int:
        if time.monotonic() < self._deadline:
            return 0
        self._overran = True
        return 1


def _check_text(text: str, what: str) -> None:
    """Refuse text SQLite cannot take (a lone surrogate) with the place it is at."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryError(
            f"{what} is not valid text: a lone surrogate {text[exc.start]!a} at character "
            f"{exc.start}"
        ) from None


def _table(columns: Sequence[str], cells: Sequence[Sequence[str]], more: int) -> str:
    """A compact text table, then how many rows there are (and how many were left out)."""
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
        lines.append(f"({len(cells)} rows shown; {count} more not shown: narrow the query)")
    else:
        lines.append(f"({len(cells)} rows)")
    return "\n".join(lines)


def _cell(value: Any, width: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)[: width + 1].replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"
