"""Durable runs: replay, resume after SIGKILL at random points, interrupted tools, and the
journal's checks."""

import asyncio
import json
import multiprocessing
import random
from pathlib import Path

import attrs
import pytest

import aopkit
from aopkit import (
    Diverged,
    JSONFileStore,
    Msg,
    ReActAgent,
    SQLiteStore,
    ToolInterrupted,
    ToolUseBlock,
)
from aopkit.models import ChatResponse

from . import durable_program
from .durable_program import program


def _without_ids(memories):
    return {
        agent: [{k: v for k, v in m.items() if k not in ("id", "timestamp")} for m in msgs]
        for agent, msgs in memories.items()
    }


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_finished_run_replays_whole_without_models_or_tools(tmp_path):
    store = JSONFileStore(tmp_path / "store")
    first = await program(store, "trip", tmp_path)
    calls, effects = _lines(tmp_path / "calls.log"), _lines(tmp_path / "effects.log")
    again = await program(store, "trip", tmp_path)
    assert again == first, "the same messages, ids and timestamps included"
    assert _lines(tmp_path / "calls.log") == calls, "no model was asked again"
    assert _lines(tmp_path / "effects.log") == effects, "no tool ran again"
    (tmp_path / "plain").mkdir()
    plain = await program(store, None, tmp_path / "plain")
    assert _without_ids(plain) == _without_ids(first), "durability changes nothing else"


async def test_a_changed_program_is_refused_not_mixed_in(tmp_path, kernel):
    store = SQLiteStore(tmp_path / "db")
    agent = ReActAgent("solo", "scripted:x", kernel=kernel)
    agent.model.add("fine")
    async with aopkit.durable(store, "r"):
        await agent("first question")
    before = await store.journal("r")
    other = ReActAgent("solo", "scripted:x", kernel=kernel)
    with pytest.raises(Diverged, match=r"input solo/0: the program now gives 'another"):
        async with aopkit.durable(store, "r"):
            await other("another question")
    assert await store.journal("r") == before


async def test_a_durable_tool_call_gets_its_arguments_converted_once(tmp_path, kernel):
    """In a durable run too, the tool gets what the check of its arguments made, and a replay
    converts nothing again."""
    converted = []

    @attrs.frozen
    class Point:
        x: int

    def hook(value, _):
        converted.append(value)
        return Point(value["x"])

    kernel.codec.converter.register_structure_hook(Point, hook)

    def double(p: Point) -> int:
        """Double a point's x."""
        return 2 * p.x

    store = JSONFileStore(tmp_path / "store")
    for _ in range(2):  # run, then replay from the journal
        agent = ReActAgent("solo", "scripted:x", tools=[double], kernel=kernel)
        agent.model.add([ToolUseBlock("c1", "double", {"p": {"x": 21}})], "42")
        async with aopkit.durable(store, "points"):
            assert (await agent("double it")).text == "42"
    assert converted == [{"x": 21}]


async def test_one_run_opened_twice_at_once_is_refused(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    inside, leave = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with aopkit.durable(store, "r"):
            inside.set()
            await leave.wait()

    task = asyncio.create_task(first())
    await inside.wait()
    for same in (store, SQLiteStore(tmp_path / "db")):
        with pytest.raises(aopkit.DurableError, match="'r' is already open in this process"):
            async with aopkit.durable(same, "r"):
                pass
    async with aopkit.durable(store, "other"):
        pass  # another run of the same store is free
    leave.set()
    await task
    async with aopkit.durable(store, "r"):
        pass  # and the run itself, once the first block ended


@pytest.mark.parametrize(
    "entry", [{"kind": ["x"], "key": "a/0"}, {"kind": "model", "key": {}}, {"key": "a/0"}]
)
async def test_a_journal_entry_without_a_string_kind_and_key_is_a_clear_error(tmp_path, entry):
    store = SQLiteStore(tmp_path / "db")
    await store.append("r", [{"kind": "input", "key": "a/0"}, entry])
    with pytest.raises(aopkit.DurableError, match="journal entry 1 is damaged"):
        async with aopkit.durable(store, "r"):
            pass
    with pytest.raises(aopkit.DurableError, match="journal entry 1 is damaged"):
        await aopkit.pending_approval(store, "r")
    assert len(await store.journal("r")) == 2, "left as it is"


def _chain(
    root: Path, store_factory, rng: random.Random, most: int
) -> tuple[int, dict[str, set[str]]]:
    """Run the program in child processes, each killed at a random append of its own, until
    one finishes (after ``most`` kills, one is let finish); the number of kills, and the model
    turns journaled before each process (by its pid)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([durable_program.__name__])
    kills, journaled_before = 0, {}
    while not (root / "memories.json").exists():
        assert kills <= most, "the run never finished"
        entries = _journal(store_factory)
        at, when = rng.randint(1, 3), rng.choice(["before", "after"])
        if kills == most:
            at = 0  # enough: let it finish
        child = context.Process(
            target=durable_program.run_in_child, args=(store_factory(), "trip", root, at, when)
        )
        child.start()
        journaled_before[str(child.pid)] = {
            e["answer"]["id"] for e in entries if e["kind"] == "model"
        }
        child.join(60)
        if child.exitcode == -9:
            kills += 1
        else:
            assert child.exitcode == 0, f"the resumed run failed ({child.exitcode})"
    return kills, journaled_before


def _journal(store_factory):
    import asyncio

    return asyncio.run(store_factory().journal("trip"))


@pytest.mark.processes
@pytest.mark.parametrize(("kind", "most"), [("json", 25), ("sqlite", 12)])
def test_killed_at_random_points_and_resumed_the_memories_are_an_uninterrupted_runs(
    tmp_path, kind, most
):
    import asyncio

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    plain_root = tmp_path / "plain"
    plain_root.mkdir()
    plain = asyncio.run(program(None, None, plain_root))
    root = tmp_path / "killed"
    root.mkdir()

    def store_factory():
        if kind == "json":
            return JSONFileStore(root / "store")
        return SQLiteStore(root / "store.db")

    kills, journaled_before = _chain(root, store_factory, rng, most)
    assert kills >= 10, f"seed {seed}: the run finished after {kills} kills only"
    resumed = json.loads((root / "memories.json").read_text())
    assert _without_ids(resumed) == _without_ids(plain), f"seed {seed}"
    effects = _lines(root / "effects.log")
    assert sorted(effects) == sorted(_lines(plain_root / "effects.log")), (
        f"seed {seed}: every charge happened exactly once"
    )
    for line in _lines(root / "calls.log"):
        pid, turn = line.split()
        assert turn not in journaled_before[pid], (
            f"seed {seed}: process {pid} asked the model again for {turn}, journaled before"
        )


async def test_an_interrupted_tool_that_is_not_idempotent_is_not_run_again(tmp_path):
    store = JSONFileStore(tmp_path)
    ran = []

    def pay(amount: int) -> str:
        """Pay."""
        ran.append(amount)
        return "paid"

    kernel = aopkit.Kernel(environ={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")})
    use = ToolUseBlock("c1", "pay", {"amount": 5})
    agent = ReActAgent("payer", "scripted:x", tools=[pay], kernel=kernel)
    agent.model.add([use], "done")
    # what a process killed mid-call leaves: the model's answer and the call's start
    async with aopkit.durable(store, "r") as run:
        await run.record("input", "payer/0", msg=kernel.codec.dump(Msg("user", "pay 5", "user")))
        answer = ChatResponse([use], finish_reason="tool_use")
        await run.record("model", "payer/0/model0", answer=kernel.codec.dump(answer))
        await run.record("tool-started", "payer/0/tool/c1")
    with pytest.raises(ToolInterrupted, match=r"tool 'pay' \(call c1\) was interrupted") as info:
        async with aopkit.durable(store, "r"):
            await agent("pay 5")
    assert info.value.call.arguments == {"amount": 5}
    assert ran == [], "not run again without a decision"
    await kernel.aclose()


async def test_a_store_without_journals_is_refused(tmp_path):
    class SessionsOnly:
        async def save(self, session_id, states): ...
        async def load(self, session_id):
            return {}

    with pytest.raises(aopkit.DurableError, match="keeps no journals"):
        async with aopkit.durable(SessionsOnly(), "r"):
            pass
    with pytest.raises(aopkit.StoreError, match="invalid run id"):
        async with aopkit.durable(JSONFileStore(tmp_path), "../x"):
            pass


@pytest.mark.parametrize(
    "damaged",
    [
        {"kind": "reply", "key": "solo/0"},  # no message
        {"kind": "reply", "key": "solo/0", "msg": {"name": "solo", "role": "robot"}},
        {"kind": "model", "key": "solo/0/model0", "answer": [1, 2]},
        {"kind": "step", "key": "solo/0/step0", "msgs": "text"},
    ],
)
async def test_a_damaged_journal_entry_is_an_error_naming_it(tmp_path, kernel, damaged):
    store = SQLiteStore(tmp_path / "db")
    use = ToolUseBlock("c1", "look", {})
    answer = ChatResponse([use], finish_reason="tool_use")
    entries = [{"kind": "model", "key": "solo/0/model0", "answer": kernel.codec.dump(answer)}]
    await store.append("r", [e for e in entries if e["key"] != damaged["key"]] + [damaged])
    before = await store.journal("r")

    def look() -> str:
        """Look."""
        return "seen"

    agent = ReActAgent("solo", "scripted:x", tools=[look], kernel=kernel)
    agent.model.add("never asked")
    with pytest.raises(
        aopkit.DurableError,
        match=rf"journal entry '{damaged['kind']}' '{damaged['key']}' is damaged",
    ):
        async with aopkit.durable(store, "r"):
            await agent()
    assert await store.journal("r") == before


async def test_cancelled_at_random_awaits_and_resumed_no_charge_happens_twice(tmp_path):
    """A cancel (unlike a SIGKILL) lets the run record what it stopped: the resumed run goes
    on from there, and every history stays valid (each tool call with its result)."""
    import asyncio

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    store = SQLiteStore(tmp_path / "db")
    for _ in range(12):
        try:
            memories = await asyncio.wait_for(
                program(store, "trip", tmp_path), timeout=rng.uniform(0.02, 0.4)
            )
            break
        except asyncio.TimeoutError:
            continue
    else:
        memories = await program(store, "trip", tmp_path)
    effects = _lines(tmp_path / "effects.log")
    assert len(effects) == len(set(effects)), f"seed {seed}: a charge ran twice"
    for agent, msgs in memories.items():
        blocks = [b for m in msgs if isinstance(m["content"], list) for b in m["content"]]
        calls = [b["id"] for b in blocks if b["type"] == "tool_use"]
        results = [b["id"] for b in blocks if b["type"] == "tool_result"]
        assert calls == results, f"seed {seed}: {agent}'s history separates a call from its result"
    assert await program(store, "trip", tmp_path) == memories, "finished: it replays whole"
