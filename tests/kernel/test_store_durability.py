"""Session stores under attack: concurrent writers, SIGKILL mid-save, corrupt files."""

import asyncio
import concurrent.futures
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from aopkit import JSONFileStore, SQLiteStore, StoreError
from aopkit import files as aopkit_files

pytestmark = pytest.mark.processes  # see the marker in pyproject.toml

ROOT = Path(__file__).parents[2]


def run(coroutine):
    """Run a coroutine on a loop of its own in a thread of its own. These tests are synchronous
    (threads, processes, signals); ``asyncio.run`` on the main thread would replace the loop
    pytest-asyncio keeps there, leaving it unclosed for the garbage collector."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def make_store(kind, tmp_path):
    if kind == "json":
        return JSONFileStore(tmp_path / "sessions")
    return SQLiteStore(tmp_path / "sessions.db")


def store_file(kind, tmp_path):
    return tmp_path / "sessions" / "s.json" if kind == "json" else tmp_path / "sessions.db"


def state(writer, agent, round_=0):
    return {"writer": writer, "agent": agent, "round": round_, "memory": ["m" * 200] * 20}


KINDS = ["json", "sqlite"]


# -- concurrent saves: every state is kept ------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_saves_from_tasks_are_all_kept(kind, tmp_path):
    store = make_store(kind, tmp_path)

    async def writer(w):
        for a in range(5):
            await store.save("s", {f"w{w}-a{a}": state(w, a)})

    await asyncio.gather(*(writer(w) for w in range(8)))
    loaded = await store.load("s")
    assert sorted(loaded) == sorted(f"w{w}-a{a}" for w in range(8) for a in range(5))
    assert all(loaded[f"w{w}-a{a}"] == state(w, a) for w in range(8) for a in range(5))


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_saves_from_threads_are_all_kept(kind, tmp_path):
    store = make_store(kind, tmp_path)
    start = threading.Barrier(8)
    errors = []

    def writer(w):
        try:
            start.wait()
            for a in range(5):
                run(store.save("s", {f"w{w}-a{a}": state(w, a)}))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = run(store.load("s"))
    assert len(loaded) == 40
    assert all(loaded[f"w{w}-a{a}"] == state(w, a) for w in range(8) for a in range(5))


WRITER = """
import asyncio, sys, time
from aopkit import JSONFileStore, SQLiteStore
kind, where, writer, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
store = JSONFileStore(where) if kind == "json" else SQLiteStore(where)
def state(w, a):
    return {"writer": w, "agent": a, "round": 0, "memory": ["m" * 200] * 20}
time.sleep(max(0.0, start - time.time()))  # start together
async def main():
    for a in range(5):
        await store.save("s", {f"w{writer}-a{a}": state(writer, a)})
asyncio.run(main())
"""


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_saves_from_processes_are_all_kept(kind, tmp_path):
    store = make_store(kind, tmp_path)
    where = str(store.root if kind == "json" else store.path)
    start = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, kind, where, str(w), str(start)],
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
    loaded = run(store.load("s"))
    assert len(loaded) == 20
    assert all(loaded[f"w{w}-a{a}"] == state(w, a) for w in range(4) for a in range(5))


# -- SIGKILL mid-save ---------------------------------------------------------------------------
SAVER = """
import asyncio, sys
from aopkit import JSONFileStore, SQLiteStore
kind, where = sys.argv[1], sys.argv[2]
store = JSONFileStore(where) if kind == "json" else SQLiteStore(where)
async def main():
    version = 0
    while True:
        version += 1
        big = "v%d-" % version + "x" * 1_500_000
        await store.save("s", {a: {"version": version, "payload": big} for a in ("a", "b", "c")})
        print(version, flush=True)
asyncio.run(main())
"""


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_mid_save_leaves_a_whole_session_and_no_temp_file(kind, tmp_path):
    store = make_store(kind, tmp_path)
    where = str(store.root if kind == "json" else store.path)
    rng = random.Random(11)
    last_version, temps_seen = 0, 0
    for kill in range(12):
        with subprocess.Popen([sys.executable, "-c", SAVER, kind, where], stdout=PIPE) as child:
            assert child.stdout is not None
            child.stdout.readline()  # one save done: the next ones are under way
            if kind == "json" and kill % 2:  # kill while the temporary file is being written
                deadline = time.monotonic() + 10
                while not list(Path(where).glob(".s.json.*.tmp")):
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            else:  # kill anywhere
                time.sleep(rng.uniform(0.0, 0.3))
            child.send_signal(signal.SIGKILL)
            child.wait()
        if kind == "json":
            temps_seen += bool(list(Path(where).glob(".s.json.*.tmp")))
        loaded = run(store.load("s"))
        versions = {s["version"] for s in loaded.values()}
        assert sorted(loaded) == ["a", "b", "c"] and len(versions) == 1, "one save, whole"
        (version,) = versions
        assert version >= 1 and all(
            s["payload"] == f"v{version}-" + "x" * 1_500_000 for s in loaded.values()
        )
        last_version = version
        if kind == "json":
            assert list(Path(where).glob("*.tmp")) == [], "the load removed the stale temp"
    assert last_version >= 1
    assert kind == "sqlite" or temps_seen >= 6, "the kills left temporary files to clean"


def test_stale_temp_files_are_removed_by_the_next_save_and_load(tmp_path):
    store = JSONFileStore(tmp_path)
    run(store.save("s", {"a": {"n": 1}}))
    for make, clean in [(1, "load"), (2, "save")]:
        for i in range(make):
            (tmp_path / f".s.json.dead{i}.tmp").write_bytes(b"x" * 1000)
        (tmp_path / ".other.json.live.tmp").write_bytes(b"another session's")
        if clean == "load":
            run(store.load("s"))
        else:
            run(store.save("s", {"b": {"n": 2}}))
        assert not list(tmp_path.glob(".s.json.*.tmp"))
        assert (tmp_path / ".other.json.live.tmp").exists(), "only this session's are touched"


def test_a_temp_file_of_a_live_writer_is_not_removed(tmp_path):
    """While a writer holds the session lock (between writing its temporary file and renaming
    it), a load waits for it instead of deleting the file under it."""
    store = JSONFileStore(tmp_path)
    run(store.save("s", {"a": {"n": 1}}))
    path = tmp_path / "s.json"
    writing = tmp_path / ".s.json.live.tmp"
    loaded = []
    with aopkit_files.locked(path):
        writing.write_bytes(b"half written")
        reader = threading.Thread(target=lambda: loaded.append(run(store.load("s"))))
        reader.start()
        time.sleep(0.3)
        assert writing.exists() and not loaded, "the load waits for the writer"
        os.replace(writing, path)
        path.write_text(json.dumps({"a": {"n": 2}}))
    reader.join(10)
    assert loaded == [{"a": {"n": 2}}]


# -- corruption: a clear StoreError, and nothing overwritten ------------------------------------
def _good_session_bytes(tmp_path):
    store = JSONFileStore(tmp_path / "good")
    run(store.save("s", {f"agent{i}": state(0, i) for i in range(5)}))
    return (tmp_path / "good" / "s.json").read_bytes()


def _unreadable(path, monkeypatch):
    path.write_text("{}")
    real = Path.read_bytes

    def deny(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)


JSON_CORRUPTIONS = {
    "binary garbage": (lambda p, tp, mp: p.write_bytes(os.urandom(300) + b"\x00\xff"), "corrupt"),
    "invalid UTF-8": (lambda p, tp, mp: p.write_bytes(b'{"a": {"x": "\xff\xfe"}}'), "UTF-8"),
    "a JSON array": (lambda p, tp, mp: p.write_text("[1, 2]"), "corrupt (an array, not an object"),
    "a state that is not an object": (
        lambda p, tp, mp: p.write_text('{"alice": [1], "bob": {}}'),
        "agent 'alice' is an array",
    ),
    "truncated": (
        lambda p, tp, mp: p.write_bytes(_good_session_bytes(tp)[:2000]),
        "not valid JSON",
    ),
    "empty": (lambda p, tp, mp: p.write_bytes(b""), "not valid JSON"),
    "nested too deeply": (lambda p, tp, mp: p.write_text("[" * 100_000), "nested"),
    "NaN": (lambda p, tp, mp: p.write_text('{"a": {"x": NaN}}'), "a.x: NaN"),
    "a directory": (lambda p, tp, mp: p.mkdir(), "Is a directory"),
    "permission denied": (lambda p, tp, mp: _unreadable(p, mp), "Permission denied"),
}


def _snapshot(path):
    if path.is_dir():
        return "a directory"
    with open(path, "rb") as f:  # not Path.read_bytes, which a test makes fail
        return f.read()


@pytest.mark.parametrize("operation", ["load", "save"])
@pytest.mark.parametrize("corruption", list(JSON_CORRUPTIONS))
def test_a_corrupt_json_session_is_a_store_error_and_is_never_overwritten(
    corruption, operation, tmp_path, monkeypatch
):
    store = JSONFileStore(tmp_path / "sessions")
    store.root.mkdir()
    path = store.root / "s.json"
    corrupt, expected = JSON_CORRUPTIONS[corruption]
    corrupt(path, tmp_path, monkeypatch)
    before = _snapshot(path)
    with pytest.raises(StoreError) as info:
        if operation == "load":
            run(store.load("s"))
        else:
            run(store.save("s", {"alice": {"fresh": True}}))
    assert str(path) in str(info.value)
    assert expected in str(info.value)
    assert _snapshot(path) == before, "the corrupt file is left for recovery"
    assert not list(store.root.glob("*.tmp"))


def _sqlite_row(state_value):
    def corrupt(db_path):
        with sqlite3.connect(db_path) as db:
            db.execute("UPDATE agent_state SET state = ? WHERE agent = 'agent1'", (state_value,))

    return corrupt


def _truncate(db_path):
    data = db_path.read_bytes()
    db_path.write_bytes(data[: len(data) // 2])


def _replace_with_directory(db_path):
    db_path.unlink()
    db_path.mkdir()


SQLITE_CORRUPTIONS = {
    "a garbage row": (_sqlite_row(b"\x00\xffgarbage"), "agent 'agent1' is corrupt"),
    "a row of text that is not JSON": (_sqlite_row("{half"), "agent 'agent1' is corrupt"),
    "a row that is not an object": (_sqlite_row("[1, 2]"), "agent 'agent1' is an array"),
    "a row that is a number": (_sqlite_row(12), "agent 'agent1' is a number"),
    "a row with NaN": (_sqlite_row('{"x": NaN}'), "x: NaN"),
    "a truncated file": (_truncate, "malformed"),
    "garbage bytes": (lambda p: p.write_bytes(os.urandom(8192)), "not a database"),
    "a directory": (_replace_with_directory, "unable to open"),
}


@pytest.mark.parametrize("operation", ["load", "save"])
@pytest.mark.parametrize("corruption", list(SQLITE_CORRUPTIONS))
def test_a_corrupt_sqlite_store_is_a_store_error_and_is_never_overwritten(
    corruption, operation, tmp_path
):
    db_path = tmp_path / "store.db"
    store = SQLiteStore(db_path)
    run(store.save("s", {f"agent{i}": state(0, i) for i in range(40)}))
    corrupt, expected = SQLITE_CORRUPTIONS[corruption]
    corrupt(db_path)
    before = _snapshot(db_path)
    with pytest.raises(StoreError) as info:
        if operation == "load":
            run(store.load("s"))
        else:
            run(store.save("s", {"agent1": {"fresh": True}}))
    assert str(db_path) in str(info.value)
    assert expected in str(info.value)
    assert _snapshot(db_path) == before, "the corrupt store is left for recovery"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("bad_state", "expected"),
    [
        ({"x": float("nan")}, "agent 'bob': x: nan is not a JSON number"),
        ({"x": ["ok", "\ud800"]}, "agent 'bob': x[1]: lone surrogate"),
        ({"x": object()}, "agent 'bob': x: a Python object is not a JSON value"),
        (["not", "a", "dict"], "agent 'bob' must be a dict"),
    ],
)
@pytest.mark.parametrize("name", ["bob", 7])
def test_a_state_that_would_not_load_back_is_refused_and_nothing_is_saved(
    kind, bad_state, expected, name, tmp_path
):
    store = make_store(kind, tmp_path)
    run(store.save("s", {"alice": {"n": 1}}))
    with pytest.raises(StoreError) as info:
        run(store.save("s", {"alice": {"n": 2}, name: bad_state}))
    assert (expected if name == "bob" else "agent names must be strings, got 7") in str(info.value)
    assert run(store.load("s")) == {"alice": {"n": 1}}
