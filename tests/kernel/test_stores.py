"""The store suite on the embedded stores, and what only they can get wrong (their files)."""

import functools
import os

import pytest

from aopkit import JSONFileStore, SQLiteStore, StoreError
from aopkit.testing.stores import StoreSuite


class TestJSONFileStore(StoreSuite):
    @pytest.fixture
    def store_factory(self, tmp_path):
        return functools.partial(JSONFileStore, tmp_path / "store")


class TestSQLiteStore(StoreSuite):
    @pytest.fixture
    def store_factory(self, tmp_path):
        return functools.partial(SQLiteStore, tmp_path / "store.db")


async def test_a_torn_last_line_is_dropped_then_cut_off(tmp_path):
    store = JSONFileStore(tmp_path)
    await store.append("run", [{"n": 1}])
    whole = (tmp_path / "run.journal").read_bytes()
    await store.append("run", [{"n": 2}, {"n": 3}])
    torn = (tmp_path / "run.journal").read_bytes()[: len(whole) + 9]
    (tmp_path / "run.journal").write_bytes(torn)  # what a writer killed mid-line leaves
    assert await store.journal("run") == [{"n": 1}]
    await store.append("run", [{"n": 4}])
    assert await store.journal("run") == [{"n": 1}, {"n": 4}]
    assert (tmp_path / "run.journal").read_bytes().startswith(whole)


async def test_a_torn_first_line_leaves_an_empty_journal(tmp_path):
    (tmp_path / "run.journal").write_bytes(b'0123abcd [{"n"')
    store = JSONFileStore(tmp_path)
    assert await store.journal("run") == []
    await store.append("run", [{"n": 1}])
    assert await store.journal("run") == [{"n": 1}]


@pytest.mark.parametrize(
    "damage",
    [
        lambda line: line.replace(b'"n":1', b'"n":7'),  # a flipped byte: the checksum says so
        lambda line: b"garbage\n",
        lambda line: b"\x00" * (len(line) - 1) + b"\n",
    ],
)
async def test_a_damaged_whole_line_is_an_error_naming_it(tmp_path, damage):
    store = JSONFileStore(tmp_path)
    await store.append("run", [{"n": 1}])
    await store.append("run", [{"n": 2}])
    path = tmp_path / "run.journal"
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(damage(first) + second)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"run\.journal, line 1 is corrupt.*left as it is"):
        await store.journal("run")
    assert path.read_bytes() == before


async def test_a_failed_write_is_cut_back_off(tmp_path, monkeypatch):
    store = JSONFileStore(tmp_path)
    await store.append("run", [{"n": 1}])
    before = (tmp_path / "run.journal").read_bytes()
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StoreError, match=r"cannot append to journal .*No space left"):
        await store.append("run", [{"n": 2}])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (tmp_path / "run.journal").read_bytes() == before


async def test_a_corrupt_sqlite_entry_is_an_error_naming_it(tmp_path):
    import sqlite3

    store = SQLiteStore(tmp_path / "db")
    await store.append("run", [{"n": 1}, {"n": 2}])
    with sqlite3.connect(tmp_path / "db") as db:
        db.execute("UPDATE journal SET entry = '[1' WHERE seq = 2")
    db.close()
    with pytest.raises(StoreError, match=r"run 'run', entry 2 is corrupt"):
        await store.journal("run")
