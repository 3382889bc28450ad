"""The SQL a model may run: named functions and pragmas only, in every mode."""

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from aopkit_tools import Database, QueryError
from aopkit_tools._sql_policy import FUNCTIONS, READING_PRAGMAS

MODES = [pytest.mark.parametrize("writable", [False, True], ids=["read-only", "writable"])]


@pytest.fixture
def path(tmp_path):
    """A database with a table, an index, full-text tables and a view."""
    file = tmp_path / "docs.db"
    with sqlite3.connect(file) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, meta TEXT)")
        db.execute("CREATE INDEX notes_body ON notes (body)")
        db.execute("INSERT INTO notes (body, meta) VALUES ('hello world', '{\"n\": 1}')")
        db.execute("CREATE VIRTUAL TABLE docs3 USING fts3(body)")
        db.execute("CREATE VIRTUAL TABLE docs5 USING fts5(body)")
        db.execute("INSERT INTO docs3 VALUES ('hello world')")
        db.execute("INSERT INTO docs5 VALUES ('hello world')")
    db.close()
    return file


def run(path, sql, writable=False, params=None):
    database = Database(path, writable=writable)
    try:
        return database.sql_query(sql, params)
    finally:
        database.close()


@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),
        ("SELECT fts3_tokenizer('simple', x'4141414141414141')", "fts3_tokenizer"),
        ("SELECT FTS3_TOKENIZER('simple', x'41')", "fts3_tokenizer"),
        ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
        ("SELECT 1 WHERE load_extension('x') IS NULL", "load_extension"),
        ("SELECT fts5(NULL)", "fts5"),
        ("SELECT rtreenode(2, x'00')", "rtreenode"),
        ("SELECT sqlite_log(1, 'x')", "sqlite_log"),
    ],
)
def test_dangerous_functions_are_refused_in_every_mode(path, writable, sql, name):
    with pytest.raises(QueryError) as refused:
        run(path, sql, writable)
    assert str(refused.value) == f"refused: the SQL function {name}() is not allowed by this tool"


@pytest.mark.parametrize("writable", [False, True])
def test_the_fts3_tokenizer_crash_is_refused_in_a_child_process(path, writable):
    """Once crashed the host (a pointer to call taken from SQL): run where a crash is harmless."""
    child = textwrap.dedent(
        f"""
        from aopkit_tools import Database, QueryError
        database = Database({str(path)!r}, writable={writable})
        try:
            database.sql_query("SELECT fts3_tokenizer('simple', x'4141414141414141')")
        except QueryError as exc:
            print("refused:", exc)
        print(database.sql_query("SELECT body FROM docs3 WHERE docs3 MATCH 'hello'"))
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "refused: refused: the SQL function fts3_tokenizer() is not allowed by this tool",
        "body",
        "-----------",
        "hello world",
        "(1 rows)",
    ]


def test_every_function_sqlite_has_and_the_list_lacks_is_refused(path):
    """The allow-list holds against the library's own list, whatever this SQLite ships."""
    with sqlite3.connect(path) as db:
        known = db.execute("SELECT name, max(narg, 0) FROM pragma_function_list").fetchall()
    db.close()
    refused = sorted({(name, arity) for name, arity in known if name not in FUNCTIONS})
    database = Database(path)
    try:
        for name, arity in refused:
            with pytest.raises(QueryError, match=rf"function {name}\(\) is not allowed"):
                database.sql_query(f'SELECT "{name}"({", ".join(["NULL"] * arity)})')
    finally:
        database.close()
    assert {"fts3_tokenizer", "load_extension"} <= {name for name, _ in refused}


@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize(
    ("sql", "answer"),
    [
        ("SELECT upper(body), length(body), substr(body, 1, 5) FROM notes", "HELLO WORLD | 11"),
        ("SELECT meta ->> '$.n', json_extract(meta, '$.n') + 1 FROM notes", "1 | 2"),
        ("SELECT count(*), group_concat(body) FROM notes", "1 | hello world"),
        ("SELECT rank() OVER (ORDER BY id) FROM notes", "1"),
        ("SELECT date('2024-01-31', '+1 day'), round(sqrt(16.0))", "2024-02-01 | 4.0"),
        ("SELECT body LIKE 'hello%', body GLOB 'h*' FROM notes", "1 | 1"),
        ("SELECT coalesce(NULL, 7), iif(1, 'a', 'b'), typeof(randomblob(4))", "7 | a | blob"),
        ("SELECT snippet(docs3) FROM docs3 WHERE docs3 MATCH 'hello'", "<b>hello</b> world"),
        ("SELECT highlight(docs5, 0, '[', ']') FROM docs5 WHERE docs5 MATCH 'world'", "hello [wo"),
        ("SELECT round(bm25(docs5)) FROM docs5 WHERE docs5 MATCH 'hello'", "0.0"),
        ("SELECT name FROM pragma_table_info('notes') WHERE pk", "id"),
        ("SELECT name FROM pragma_index_list('notes')", "notes_body"),
        ("SELECT count(*) > 3 FROM pragma_table_list", "1"),
        ("SELECT value FROM json_each('[5, 6]') WHERE key = 1", "6"),
        ("PRAGMA table_info(notes)", "0 | id"),
        ("PRAGMA main.index_info(notes_body)", "0 | 1 | body"),
        ("PRAGMA user_version", "0"),
        ("PRAGMA integrity_check", "ok"),
    ],
)
def test_functions_and_pragmas_that_only_read_work_in_every_mode(path, writable, sql, answer):
    table = run(path, sql, writable)
    assert " ".join(table.splitlines()[2].split()).startswith(answer), table


@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA database_list",  # shows where the file is
        "SELECT file FROM pragma_database_list",
        "PRAGMA cache_size = -10000000",  # memory the connection may take
        "PRAGMA temp_store = MEMORY",
        "PRAGMA mmap_size = 1000000000",
        "PRAGMA hard_heap_limit = 1",  # for the whole program
        "PRAGMA soft_heap_limit = 1",
        "PRAGMA writable_schema = ON",
        "PRAGMA trusted_schema = ON",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = OFF",
        "PRAGMA temp_store_directory = '/tmp'",
        "PRAGMA cache_size",
    ],
)
def test_pragmas_outside_the_list_are_refused_in_every_mode(path, writable, sql):
    with pytest.raises(QueryError, match=r"^refused: PRAGMA \w+ is not allowed by this tool$"):
        run(path, sql, writable)
    assert "PRAGMA database_list" not in READING_PRAGMAS


def test_a_read_only_database_refuses_pragmas_that_write(path):
    with pytest.raises(QueryError, match="the database is read-only"):
        run(path, "PRAGMA user_version = 3")
    assert run(path, "PRAGMA user_version = 3", writable=True) == "done"
    assert run(path, "PRAGMA user_version").splitlines()[2] == "3"


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE notes RENAME TO letters",
        "ALTER TABLE notes RENAME COLUMN meta TO extra",
        "ALTER TABLE notes DROP COLUMN meta",
        "ALTER TABLE notes ADD COLUMN code TEXT",
    ],
)
def test_a_writable_database_can_alter_tables(path, sql):
    """ALTER TABLE runs SQLite's own functions through the authorizer: they are allowed."""
    assert run(path, sql, writable=True) == "done"


def test_a_view_that_calls_a_refused_function_is_refused(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE VIEW sneaky AS SELECT subtype(1) AS p")
    db.close()
    with pytest.raises(QueryError, match=r"subtype\(\) is not allowed"):
        run(path, "SELECT * FROM sneaky")
