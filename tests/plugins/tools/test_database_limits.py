"""What one statement may cost the host: values, columns, rows, memory, bad input."""

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from aopkit_tools import Database, QueryError
from aopkit_tools.database import MAX_COLUMNS

needs_setlimit = pytest.mark.skipif(
    not hasattr(sqlite3.Connection, "setlimit"), reason="Connection.setlimit is Python 3.11+"
)
ROWS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT {}) "


@pytest.fixture
def path(tmp_path):
    file = tmp_path / "big.db"
    with sqlite3.connect(file) as db:
        db.execute(f"CREATE TABLE wide ({', '.join(f'c{i}' for i in range(150))})")
        db.execute("INSERT INTO wide (c0, c149) VALUES (1, 2)")
        db.execute("CREATE TABLE blobs (b BLOB)")
        db.execute("INSERT INTO blobs VALUES (zeroblob(3000000))")
    db.close()
    return file


@needs_setlimit
@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT randomblob(1000001)",
        "SELECT zeroblob(2000000)",
        "SELECT length(randomblob(600000) || randomblob(600000))",
        "SELECT length(replace(hex(zeroblob(400000)), '0', 'xx'))",
        ROWS.format(30) + "SELECT length(group_concat(hex(zeroblob(40000)))) FROM n",
        "SELECT substr(b, 1, 3) FROM blobs",  # a stored value over the limit
    ],
)
def test_no_value_may_grow_past_max_bytes(path, writable, sql):
    database = Database(path, writable=writable, max_bytes=1_000_000)
    try:
        with pytest.raises(QueryError) as refused:
            database.sql_query(sql)
        assert str(refused.value) == (
            "refused: a value would be larger than 1000000 bytes, the most this tool lets one "
            "string or blob be"
        )
        assert database.sql_query("SELECT length(b) FROM blobs").splitlines()[2] == "3000000"
    finally:
        database.close()


@needs_setlimit
def test_results_have_at_most_max_columns_and_wide_tables_stay_readable(path):
    database = Database(path)
    many = ", ".join(["x"] * (MAX_COLUMNS + 1))
    try:
        with pytest.raises(QueryError, match=f"at most {MAX_COLUMNS} columns; name fewer"):
            database.sql_query(f"SELECT {many} FROM (SELECT randomblob(999999) AS x)")
        with pytest.raises(QueryError, match=f"at most {MAX_COLUMNS} columns"):
            database.sql_query("SELECT * FROM wide")
        assert database.sql_query("SELECT c0, c149 FROM wide").splitlines()[2] == "1  | 2"
        with sqlite3.connect(path) as other:  # the schema changes under the open connection
            other.execute("CREATE TABLE later (x)")
        other.close()
        assert database.sql_query("SELECT c149 FROM wide").splitlines()[2] == "2"
        assert database.sql_query("SELECT count(*) FROM later").splitlines()[2] == "0"
    finally:
        database.close()


ATTACKS = [
    "SELECT randomblob(500000000), randomblob(500000000)",
    "SELECT " + ", ".join(["x"] * 2000) + " FROM (SELECT randomblob(999999) AS x)",
    ROWS.format(2000) + "SELECT zeroblob(500000) FROM n",  # rows counted past the shown
    ROWS.format(50) + "SELECT " + ", ".join(["zeroblob(999999)"] * 100) + " FROM n",
]


@pytest.mark.processes
@needs_setlimit
def test_memory_attacks_stay_under_a_bound_in_a_child_process(path):
    """Peak memory of a child that runs the attacks: each once cost the host 1-5 GB."""
    child = textwrap.dedent(
        f"""
        import json, resource
        from aopkit_tools import Database, QueryError
        database = Database({str(path)!r}, timeout=60)
        database.sql_query("SELECT 1")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        answers = []
        for sql in {ATTACKS!r}:
            try:
                answers.append(database.sql_query(sql).splitlines()[-1])
            except QueryError as exc:
                answers.append(str(exc))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"answers": answers, "grown_mb": grown / 1024}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["answers"][0].startswith("refused: a value would be larger than 1000000")
    assert report["answers"][1].startswith("refused: a result may have at most 100 columns")
    assert report["answers"][2] == "(50 rows shown; 1950 more not shown: narrow the query)"
    assert report["answers"][3] == "(50 rows)"
    assert report["grown_mb"] < 400, report  # one row of 100 values of 1 MB, copied twice


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        ("SELECT '\ud800'", None, "the SQL is not valid text: a lone surrogate '\\ud800' at"),
        ("SELECT ?", ["\udcff"], "SQL error: "),
        ("SELECT ?", [10**30], "SQL error: Python int too large to convert to SQLite INTEGER"),
        ("SELECT :a", {"a": {"nested": 1}}, "SQL error: Error binding parameter"),
        ("SELECT ?", [float("nan")], None),
    ],
)
def test_values_sqlite_cannot_take_get_the_tools_error(path, sql, params, message):
    database = Database(path)
    try:
        if message is None:
            assert database.sql_query(sql, params).splitlines()[2] == "NULL"
            return
        with pytest.raises(QueryError) as refused:
            database.sql_query(sql, params)
        assert str(refused.value).startswith(message)
    finally:
        database.close()


@pytest.mark.parametrize("writable", [False, True])
def test_no_error_shows_where_the_database_is(tmp_path, monkeypatch, writable):
    hidden = tmp_path / "private-location"
    hidden.mkdir()
    database = Database(hidden / "missing" / "db.sqlite", writable=writable)
    monkeypatch.setenv("AOPKIT_DATABASE", str(hidden / "nope.db"))
    from_env = Database()
    garbage = hidden / "garbage.db"
    garbage.write_bytes(b"this is not a database, " * 100)
    messages = []
    for source in (database, from_env, Database(garbage, writable=writable)):
        for sql in ("SELECT 1", "PRAGMA database_list", "SELECT * FROM pragma_database_list"):
            with pytest.raises(QueryError) as failed:
                source.sql_query(sql)
            messages.append(str(failed.value))
        source.close()
    assert all("private-location" not in message for message in messages), messages
    assert "cannot open the database the program configured" in messages[0]
    assert "file is not a database" in messages[-1]
