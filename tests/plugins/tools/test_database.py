"""SQLite queries: bound parameters, capped tables, read-only unless enabled, clear errors."""

import asyncio
import sqlite3

import pytest

from aopkit import Toolkit, ToolUseBlock
from aopkit_tools import Database, QueryError

HEAVY = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def use(**arguments):
    return ToolUseBlock("call-sql", "sql_query", arguments)


@pytest.fixture
def path(tmp_path):
    """A database of 120 users."""
    file = tmp_path / "shop.db"
    with sqlite3.connect(file) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)")
        db.executemany(
            "INSERT INTO users (name, email) VALUES (?, ?)",
            [(f"user{i}", f"user{i}@example.org") for i in range(1, 121)],
        )
    db.close()
    return file


@pytest.fixture
def database(path):
    database = Database(path, max_rows=5)
    yield database
    database.close()


def count(path):
    with sqlite3.connect(path) as db:
        total = db.execute("SELECT count(*) FROM users").fetchone()[0]
    db.close()
    return total


async def test_a_query_with_bound_parameters_comes_back_as_a_table(kernel, database):
    toolkit = Toolkit(database.tools(), kernel=kernel)
    by_list = await toolkit.call(
        use(sql="SELECT id, name FROM users WHERE id IN (?, ?) ORDER BY id", params=[2, 10])
    )
    assert by_list.output == "id | name\n---+-------\n2  | user2\n10 | user10\n(2 rows)"
    by_name = await toolkit.call(
        use(sql="SELECT email FROM users WHERE id = :id", params={"id": 7})
    )
    assert by_name.output == "email\n-----------------\nuser7@example.org\n(1 rows)"
    none = await toolkit.call(use(sql="SELECT id FROM users WHERE id < 0"))
    assert none.output == "id\n--\n(0 rows)"


async def test_values_are_bound_never_interpolated(kernel, database, path):
    toolkit = Toolkit(database.tools(), kernel=kernel)
    hostile = "x'; DROP TABLE users; --"
    result = await toolkit.call(use(sql="SELECT id FROM users WHERE name = ?", params=[hostile]))
    assert result.output == "id\n--\n(0 rows)"
    assert count(path) == 120


async def test_rows_are_capped_and_the_rest_counted(kernel, database):
    toolkit = Toolkit(database.tools(), kernel=kernel)
    result = await toolkit.call(use(sql="SELECT id FROM users ORDER BY id"))
    assert result.output.splitlines()[2:] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "(5 rows shown; 115 more not shown: narrow the query)",
    ]


def test_cells_are_rendered_compactly(tmp_path):
    database = Database(tmp_path / "cells.db", writable=True, max_cell=8)
    try:
        table = database.sql_query(
            "SELECT NULL AS a, x'0001' AS b, 'two\nlines' AS c, 'a long long text' AS d, 1.5 AS e"
        )
    finally:
        database.close()
    assert table.splitlines()[2] == "NULL | <2 bytes> | two\\nli… | a long … | 1.5"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO users (name) VALUES ('mallory')",
        "UPDATE users SET name = 'x'",
        "DELETE FROM users",
        "DROP TABLE users",
        "CREATE TABLE t (x)",
        "ALTER TABLE users ADD COLUMN age INTEGER",
        "PRAGMA user_version = 3",
    ],
)
async def test_read_only_by_default(kernel, database, path, sql):
    result = await Toolkit(database.tools(), kernel=kernel).call(use(sql=sql))
    assert result.is_error
    assert result.output.startswith("QueryError: refused: the database is read-only")
    assert "Database(path, writable=True)" in result.output
    assert count(path) == 120
    assert database.sql_query("PRAGMA user_version").endswith("0\n(1 rows)")


@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize(
    "sql", ["ATTACH '{0}/other.db' AS other", "VACUUM INTO '{0}/copy.db'", "DETACH main"]
)
async def test_other_database_files_are_never_opened(kernel, path, tmp_path, writable, sql):
    database = Database(path, writable=writable)
    result = await Toolkit(database.tools(), kernel=kernel).call(use(sql=sql.format(tmp_path)))
    database.close()
    assert result.output == (
        "QueryError: refused: ATTACH, DETACH and VACUUM INTO are not allowed (they open other "
        "files)"
    )
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "copy.db").exists()


async def test_writes_when_enabled(kernel, path):
    database = Database(path, writable=True)
    toolkit = Toolkit(database.tools(), kernel=kernel)
    added = await toolkit.call(
        use(
            sql="INSERT INTO users (name, email) VALUES (:name, :email)",
            params={"name": "new", "email": "n@x"},
        )
    )
    assert added.output == "done; 1 rows changed"
    created = await toolkit.call(use(sql="CREATE TABLE notes (body TEXT)"))
    assert created.output == "done"
    database.close()
    assert count(path) == 121  # committed: another connection sees it


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sql": "SELEC * FROM users"}, 'QueryError: SQL error: near "SELEC": syntax error'),
        ({"sql": "SELECT * FROM nope"}, "QueryError: SQL error: no such table: nope"),
        (
            {"sql": "SELECT 1; SELECT 2"},
            "QueryError: SQL error: You can only execute one statement at a time.",
        ),
        ({"sql": "SELECT ?", "params": []}, "QueryError: SQL error: Incorrect number of bindings"),
        ({"sql": "SELECT ?", "params": [[1]]}, "QueryError: SQL error: Error binding parameter"),
        ({"sql": "SELECT ?", "params": "1"}, "QueryError: params must be a list (for ? "),
    ],
)
async def test_errors_come_back_as_clear_tool_errors(kernel, database, arguments, message):
    result = await Toolkit(database.tools(), kernel=kernel).call(use(**arguments))
    assert result.is_error and result.output.startswith(message)


async def test_a_missing_database_is_not_created(kernel, tmp_path, monkeypatch):
    missing = Database(tmp_path / "missing.db")
    result = await Toolkit(missing.tools(), kernel=kernel).call(use(sql="SELECT 1"))
    assert result.is_error and "cannot open the database" in result.output
    assert str(tmp_path) not in result.output  # the host's paths are not the model's business
    assert not (tmp_path / "missing.db").exists()
    monkeypatch.delenv("AOPKIT_DATABASE", raising=False)
    with pytest.raises(QueryError, match="AOPKIT_DATABASE"):
        Database().sql_query("SELECT 1")


async def test_queries_run_off_the_event_loop_and_stop_at_the_time_limit(kernel, path):
    database = Database(path, timeout=0.5)
    assert database.tool.thread
    toolkit = Toolkit(database.tools(), kernel=kernel)
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    result = await toolkit.call(use(sql=HEAVY))
    ticker.cancel()
    database.close()
    assert result.output == "QueryError: stopped: the statement ran longer than 0.5 s"
    assert ticks >= 10, "the event loop kept running while SQLite worked"


def test_the_schema_tells_the_model_about_params(database):
    params = database.tool.parameters
    assert params["required"] == ["sql"]
    assert "a list for ? placeholders" in params["properties"]["params"]["description"]
