"""The store suite: what every session and journal store must do, written once.

A store's test module subclasses :class:`StoreSuite` and gives it a ``store_factory`` fixture:
a picklable callable with no arguments that opens the store under test (each call a new
handle on the same storage; other processes call it too)::

    class TestMyStore(StoreSuite):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return functools.partial(MyStore, tmp_path / "db")

A store with an async ``aclose`` method is closed after use. The suite checks sessions
(round trip, merge, refusals), journals (order, all-or-none batches, concurrent appenders
from tasks and processes, entries acknowledged before a SIGKILL are kept) and, for a store
with a ``claim`` method, claims (one holder at a time across tasks, threads and processes; a
durable run refused to a second process; a claim freed when its holder is SIGKILLed).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from aopkit.durable import RunInUse, durable
from aopkit.errors import Claimed, StoreError
from aopkit.session import ClaimingStore, JournalStore, claim_of

StoreFactory = Callable[[], JournalStore]

HOSTILE_IDS = ("../escape", "/etc/passwd", ".hidden", "a/b", "", "x" * 200, "a\0b", "-rf")


@asynccontextmanager
async def opened(factory: StoreFactory) -> AsyncIterator[JournalStore]:
    """A store from ``factory``, closed after use if it can be."""
    store = factory()
    try:
        yield store
    finally:
        aclose = getattr(store, "aclose", None)
        if aclose is not None:
            await aclose()


def _batch(worker: int, number: int, size: int) -> list[dict[str, Any]]:
    return [{"worker": worker, "batch": number, "i": i, "text": "é✓" * i} for i in range(size)]


def _check_batches(entries: list[dict[str, Any]], size: int) -> dict[int, list[int]]:
    """Each worker's batch numbers in journal order; fails if a batch is split or partial."""
    seen: dict[int, list[int]] = {}
    assert len(entries) % size == 0, f"{len(entries)} entries is not whole batches of {size}"
    for start in range(0, len(entries), size):
        head = entries[start]
        expected = _batch(head["worker"], head["batch"], size)
        assert entries[start : start + size] == expected, f"batch at {start} is torn or mixed"
        seen.setdefault(head["worker"], []).append(head["batch"])
    return seen


def _processes() -> Any:
    """Child processes forked from a server that has imported aopkit once: starting each is
    cheap, and nothing of the test process (its threads, its event loop) is inherited."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _append_in_process(factory: StoreFactory, run: str, worker: int, batches: int) -> None:
    """A child process's work: ``batches`` appends of 3 entries, as fast as it can."""

    async def work() -> None:
        async with opened(factory) as store:
            for number in range(batches):
                await store.append(run, _batch(worker, number, 3))

    asyncio.run(work())


def _append_until_killed(factory: StoreFactory, run: str, acks: Any, size: int) -> None:
    """A child process's work: append batches forever, acknowledging each one after it returns."""

    async def work() -> None:
        async with opened(factory) as store:
            for number in range(1_000_000):
                await store.append(run, _batch(0, number, size))
                acks.send(number)

    asyncio.run(work())


def _hold_run(factory: StoreFactory, run: str, line: Any) -> None:
    """A child process's work: open durable run ``run``, journal a step, say so on ``line``,
    and wait there to be told to go on (or killed); then journal another step."""

    async def work() -> None:
        async with opened(factory) as store, durable(store, run) as found:
            await found.record("step", "child/0")
            line.send("holding")
            await asyncio.to_thread(line.recv)
            await found.record("step", "child/1")

    asyncio.run(work())


def _claiming(store: JournalStore) -> ClaimingStore:
    claiming = claim_of(store)
    if claiming is None:
        pytest.skip(f"{store!r} has no claim method (claims are optional)")
    return claiming


class StoreSuite:
    """Subclass it with a ``store_factory`` fixture (see the module docstring)."""

    pytestmark = pytest.mark.asyncio  # for pytest-asyncio's strict mode too
    processes: ClassVar[int] = 3
    """How many processes the concurrency tests start."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("give the StoreSuite subclass a store_factory fixture")

    @pytest_asyncio.fixture
    async def store(self, store_factory: StoreFactory) -> AsyncIterator[JournalStore]:
        async with opened(store_factory) as store:
            yield store

    # sessions

    async def test_states_round_trip(self, store: JournalStore) -> None:
        states: dict[str, dict[str, Any]] = {
            "alice": {"memory": [{"text": "héllo ✓ \u2028"}], "n": 1, "f": 0.5},
            "bob": {"memory": [], "nested": {"a": [None, True, "x" * 10_000]}},
        }
        await store.save("s1", states)
        assert await store.load("s1") == states
        assert await store.load("unknown") == {}

    async def test_saving_some_agents_keeps_the_others(self, store: JournalStore) -> None:
        await store.save("s", {"alice": {"v": 1}, "bob": {"v": 1}})
        await store.save("s", {"alice": {"v": 2}})
        assert await store.load("s") == {"alice": {"v": 2}, "bob": {"v": 1}}

    async def test_a_bad_state_refuses_the_whole_save(self, store: JournalStore) -> None:
        await store.save("s", {"alice": {"v": 1}})
        for bad in ({"v": float("nan")}, {"v": "\ud800"}, {"v": object()}, ["not", "a dict"]):
            with pytest.raises(StoreError, match="bob"):
                await store.save("s", {"alice": {"v": 2}, "bob": bad})  # type: ignore[dict-item]
        assert await store.load("s") == {"alice": {"v": 1}}

    @pytest.mark.parametrize("hostile", HOSTILE_IDS)
    async def test_hostile_ids_are_refused(self, store: JournalStore, hostile: str) -> None:
        with pytest.raises(StoreError, match="invalid session id"):
            await store.save(hostile, {"a": {}})
        with pytest.raises(StoreError, match="invalid run id"):
            await store.append(hostile, [{"a": 1}])
        with pytest.raises(StoreError, match="invalid run id"):
            await store.journal(hostile)

    async def test_concurrent_saves_all_land(self, store: JournalStore) -> None:
        await asyncio.gather(*(store.save("s", {f"agent{i}": {"i": i}}) for i in range(20)))
        assert await store.load("s") == {f"agent{i}": {"i": i} for i in range(20)}

    # journals

    async def test_a_journal_keeps_entries_in_order(self, store: JournalStore) -> None:
        assert await store.journal("run") == []
        await store.append("run", [{"n": 1}, {"n": 2, "text": "é\n\u2028\"'"}])
        await store.append("run", [])
        await store.append("run", ({"n": 3},))
        await store.append("other", [{"n": 9}])
        assert await store.journal("run") == [{"n": 1}, {"n": 2, "text": "é\n\u2028\"'"}, {"n": 3}]
        assert await store.journal("other") == [{"n": 9}]

    async def test_journals_and_sessions_do_not_mix(self, store: JournalStore) -> None:
        await store.append("same", [{"n": 1}])
        await store.save("same", {"alice": {"v": 1}})
        assert await store.journal("same") == [{"n": 1}]
        assert await store.load("same") == {"alice": {"v": 1}}

    async def test_a_bad_entry_refuses_the_whole_batch(self, store: JournalStore) -> None:
        await store.append("run", [{"n": 1}])
        bad_batches: list[Any] = [
            [{"n": 2}, {"n": float("inf")}],
            [{"n": 2}, {"n": "\udfff"}],
            [{"n": 2}, {"n": object()}],
            [{"n": 2}, ["not", "a dict"]],
            [{"n": 2}, None],
        ]
        for batch in bad_batches:
            with pytest.raises(StoreError, match=r"entry \[1\]"):
                await store.append("run", batch)
        not_lists: list[Any] = [{"n": 2}, "text", b"bytes", None, 3]
        for not_a_list in not_lists:
            with pytest.raises(StoreError, match="must be a list of dicts"):
                await store.append("run", not_a_list)
        assert await store.journal("run") == [{"n": 1}]

    async def test_a_returned_journal_is_a_copy(self, store: JournalStore) -> None:
        await store.append("run", [{"n": [1]}])
        (await store.journal("run"))[0]["n"].append(2)
        assert await store.journal("run") == [{"n": [1]}]

    async def test_concurrent_appenders_never_interleave_or_lose_a_batch(
        self, store: JournalStore
    ) -> None:
        async def appender(worker: int) -> None:
            for number in range(5):
                await store.append("run", _batch(worker, number, 4))

        await asyncio.gather(*(appender(w) for w in range(8)))
        seen = _check_batches(await store.journal("run"), 4)
        assert seen == {w: list(range(5)) for w in range(8)}

    async def test_appenders_in_several_processes(
        self, store: JournalStore, store_factory: StoreFactory
    ) -> None:
        context = _processes()
        workers = [
            context.Process(target=_append_in_process, args=(store_factory, "run", w, 10))
            for w in range(self.processes)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0, f"appender process failed ({worker.exitcode})"
        seen = _check_batches(await store.journal("run"), 3)
        assert seen == {w: list(range(10)) for w in range(self.processes)}

    async def test_entries_acknowledged_before_a_sigkill_are_kept(
        self, store: JournalStore, store_factory: StoreFactory
    ) -> None:
        """A child appends big batches until it is killed at a random moment (mid-append, as
        likely as not): every acknowledged batch is there, whole; at most one more, whole."""
        context = _processes()
        for size in (2, 400):
            run = f"killed-{size}"
            receiver, sender = context.Pipe(duplex=False)
            child = context.Process(
                target=_append_until_killed, args=(store_factory, run, sender, size)
            )
            child.start()
            acked = -1
            deadline = time.monotonic() + 30
            while acked < 2 and time.monotonic() < deadline:  # started and appending
                if receiver.poll(0.1):
                    acked = receiver.recv()
            time.sleep(random.uniform(0, 0.05))
            child.kill()
            child.join(10)
            while receiver.poll():
                acked = receiver.recv()
            batches = _check_batches(await store.journal(run), size).get(0, [])
            assert batches[: acked + 1] == list(range(acked + 1)), "an acknowledged batch is lost"
            assert batches in (list(range(acked + 1)), list(range(acked + 2)))
            await store.append(run, _batch(0, len(batches), size))  # and appends go on after it
            assert _check_batches(await store.journal(run), size)[0] == list(
                range(len(batches) + 1)
            )

    # claims (optional: skipped for a store without ``claim``)

    async def test_a_claim_has_one_holder_at_a_time(
        self, store: JournalStore, store_factory: StoreFactory
    ) -> None:
        claiming = _claiming(store)

        def from_another_thread() -> None:
            async def attempt() -> None:
                async with opened(store_factory) as there:
                    with pytest.raises(Claimed, match="'run:x' is claimed by someone else"):
                        async with _claiming(there).claim("run:x"):
                            pass

            asyncio.run(attempt())

        async with opened(store_factory) as other:
            other_claiming = _claiming(other)
            async with claiming.claim("run:x"):
                for holder in (claiming, other_claiming):  # not re-entrant, even on one object
                    with pytest.raises(Claimed, match="'run:x' is claimed by someone else"):
                        async with holder.claim("run:x"):
                            pass
                await asyncio.to_thread(from_another_thread)
                async with other_claiming.claim("run:y"), other_claiming.claim("x" * 300):
                    pass  # other names are free, whatever they hold
                cancelled = asyncio.create_task(self._enter(other_claiming, "run:x", 30))
                waiter = asyncio.create_task(self._enter(other_claiming, "run:x", 30))
                await asyncio.sleep(0.05)
                assert not waiter.done(), "a waiter got a claim that was held"
                cancelled.cancel()
                with pytest.raises(Claimed, match=r"still after 0\.01 s"):
                    await self._enter(other_claiming, "run:x", 0.01)
            await asyncio.wait_for(waiter, 10)  # it gets the claim once it is given up
            for name in ("../../etc/passwd", "a\0b", "\ud800", "/", ".."):
                async with claiming.claim(name):
                    pass  # names only name a lock: hostile ones are as safe as any
            with pytest.raises(StoreError, match="non-empty str"):
                async with claiming.claim(""):
                    pass

    @staticmethod
    async def _enter(claiming: ClaimingStore, name: str, wait: float) -> None:
        async with claiming.claim(name, wait=wait):
            pass

    async def test_a_durable_run_is_refused_to_a_second_process_and_freed_by_a_sigkill(
        self, store: JournalStore, store_factory: StoreFactory
    ) -> None:
        _claiming(store)
        context = _processes()
        for finish in ("normally", "by SIGKILL"):
            here, there = context.Pipe()
            child = context.Process(target=_hold_run, args=(store_factory, "held", there))
            child.start()
            assert await asyncio.to_thread(here.poll, 30) and here.recv() == "holding"
            with pytest.raises(RunInUse, match="run 'held' is in use: another process"):
                async with durable(store, "held"):
                    pass
            if finish == "normally":
                here.send("go on")  # the first process is unaffected by the refusal
                await asyncio.to_thread(child.join, 30)
                assert child.exitcode == 0, f"the holding process failed ({child.exitcode})"
            else:
                child.kill()
                await asyncio.to_thread(child.join, 30)
        deadline = time.monotonic() + 10  # a server store sees the dead connection soon
        while True:
            try:
                async with durable(store, "held") as resumed:
                    await resumed.record("step", "parent/0")
                break
            except RunInUse:
                assert time.monotonic() < deadline, "the killed holder's claim was never freed"
                await asyncio.sleep(0.05)
        keys = [entry["key"] for entry in await store.journal("held")]
        assert keys == ["child/0", "child/1", "child/0", "parent/0"]
