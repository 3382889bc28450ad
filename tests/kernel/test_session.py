import json
import os

import pytest

from aopkit import (
    AopkitError,
    DecodeError,
    ImageBlock,
    JSONFileStore,
    Msg,
    SQLiteStore,
    StoreError,
    TextBlock,
    URLSource,
    load_session,
    save_session,
)
from aopkit.events import StateLoaded, StateSaved
from aopkit.session import check_run_id

from .helpers import Echo, Recorder


@pytest.fixture(params=["json", "sqlite"])
def store(request, tmp_path):
    if request.param == "json":
        return JSONFileStore(tmp_path / "sessions")
    return SQLiteStore(tmp_path / "sessions.db")


async def test_save_and_load_round_trip(store, kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    picture = Msg(
        "u", [TextBlock("look"), ImageBlock(URLSource("https://example.test/a.png"))], "user"
    )
    await alice(picture)
    await bob(Msg("u", "hello", "user"))
    await save_session(store, "s1", alice, bob)

    alice2, bob2 = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    await load_session(store, "s1", alice2, bob2)
    assert alice2.memory.messages() == alice.memory.messages()
    assert bob2.memory.messages() == bob.memory.messages()
    await alice2(Msg("u", "and now?", "user"))  # the conversation goes on
    assert len(alice2.memory) == 4
    assert [e.session for e in recorder.of(StateSaved)] == ["s1"]
    assert [e.agents for e in recorder.of(StateLoaded)] == [("alice", "bob")]


async def test_saving_one_agent_keeps_the_others(store, kernel):
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    await alice(Msg("u", "1", "user"))
    await save_session(store, "s", alice, bob)
    await alice(Msg("u", "2", "user"))
    await save_session(store, "s", alice)
    bob2, alice2 = Echo("bob", kernel=kernel), Echo("alice", kernel=kernel)
    await load_session(store, "s", bob2, alice2)
    assert len(alice2.memory) == 4 and len(bob2.memory) == 0


async def test_loading_an_unknown_agent_is_an_error(store, kernel):
    await save_session(store, "s", Echo("alice", kernel=kernel))
    with pytest.raises(StoreError, match="no state for 'zed'"):
        await load_session(store, "s", Echo("zed", kernel=kernel))


async def test_bad_state_leaves_every_agent_unchanged(tmp_path, kernel):
    store = JSONFileStore(tmp_path)
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    await alice(Msg("u", "a", "user"))
    await bob(Msg("u", "b", "user"))
    await save_session(store, "s", alice, bob)
    data = json.loads((tmp_path / "s.json").read_text())
    data["bob"]["memory"][1]["role"] = "robot"
    (tmp_path / "s.json").write_text(json.dumps(data))
    before_alice, before_bob = alice.memory.messages(), bob.memory.messages()
    await alice(Msg("u", "more", "user"))
    before_alice = alice.memory.messages()
    with pytest.raises(DecodeError) as info:
        await load_session(store, "s", alice, bob)
    assert info.value.path == "bob.memory[1].role"
    assert alice.memory.messages() == before_alice
    assert bob.memory.messages() == before_bob


async def test_two_agents_with_one_name_are_refused(store, kernel):
    with pytest.raises(AopkitError, match="two agents are named 'a'"):
        await save_session(store, "s", Echo("a", kernel=kernel), Echo("a", kernel=kernel))


@pytest.mark.parametrize(
    "session_id",
    ["../escape", "/etc/passwd", ".hidden", "a/b", "", "x" * 200, "a\0b", "é" * 10_000, "a\\b"],
)
async def test_hostile_session_ids_are_refused(store, kernel, session_id):
    with pytest.raises(StoreError, match="invalid session id") as raised:
        await save_session(store, session_id, Echo("a", kernel=kernel))
    assert len(str(raised.value)) < 300  # a 10 kB id is not echoed whole


def test_hostile_run_ids_are_refused_briefly():
    for run in ("../run", "/tmp/x", "r" * 10_000, "a\0b"):
        with pytest.raises(StoreError, match="invalid run id") as raised:
            check_run_id(run)
        assert len(str(raised.value)) < 300


async def test_a_crash_mid_save_keeps_the_previous_state(tmp_path, kernel, monkeypatch):
    store = JSONFileStore(tmp_path)
    alice = Echo("alice", kernel=kernel)
    await alice(Msg("u", "first", "user"))
    await save_session(store, "s", alice)
    before = (tmp_path / "s.json").read_bytes()

    await alice(Msg("u", "second", "user"))
    real_fsync = os.fsync

    def crash(fd):
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(StoreError, match="power cut"):
        await save_session(store, "s", alice)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (tmp_path / "s.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.json.lock", "s.json"], (
        "no temporary file is left"
    )


async def test_sqlite_save_is_one_transaction(tmp_path, kernel):
    store = SQLiteStore(tmp_path / "db.sqlite")
    alice, bob = Echo("alice", kernel=kernel), Echo("bob", kernel=kernel)
    await save_session(store, "s", alice, bob)

    class Unsavable(Echo):
        def state_dict(self):
            return {"name": self.name, "memory": [], "handle": object()}

    await alice(Msg("u", "new", "user"))
    with pytest.raises(StoreError, match=r"state of agent 'bob'.*handle: a Python object is not"):
        await save_session(store, "s", alice, Unsavable("bob", kernel=kernel))
    alice2 = Echo("alice", kernel=kernel)
    await load_session(store, "s", alice2)
    assert len(alice2.memory) == 0, "alice's half of the failed save must not be committed"
