"""The PostgreSQL store against a real server: the store suite every store passes, then what
only a server store can meet: saves from several processes, a writer killed mid-transaction,
processes creating the schema at once, a server that goes away and comes back, bad logins."""

from __future__ import annotations

import asyncio
import functools
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from aopkit import Msg, StoreError, load_session, save_session
from aopkit.agent import Agent
from aopkit.testing.stores import StoreSuite
from aopkit_postgres import PostgresStore

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from aopkit_postgres import PostgresStore

    async def main(dsn, who, batches, size):
        async with PostgresStore(dsn, max_size=2) as store:
            print("ready", flush=True)
            for b in range(batches):
                entries = [{"who": who, "batch": b, "i": i, "pad": "x" * 200} for i in range(size)]
                await store.append("run", entries)
                await store.save("s", {f"{who}-a": {"n": b}, f"{who}-b": {"n": b}})

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


def writer(dsn: str, who: str, batches: int, size: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, dsn, who, str(batches), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finished(child: subprocess.Popen[str]) -> int:
    """Its exit code, once it ended; its pipe closed."""
    with child:
        return child.wait(timeout=120)


def check_whole_batches(entries: list[dict[str, object]], size: int) -> dict[object, int]:
    """Each writer's batches are whole, contiguous and in its order; how many each wrote."""
    count: dict[object, int] = {}
    for start in range(0, len(entries), size):
        batch = entries[start : start + size]
        assert len(batch) == size, "a batch was cut"
        who = batch[0]["who"]
        assert batch == [{**batch[0], "i": i} for i in range(size)], "a batch was interleaved"
        assert batch[0]["batch"] == count.get(who, 0), "a batch was lost, repeated or reordered"
        count[who] = count.get(who, 0) + 1
    return count


class TestPostgresStore(StoreSuite):
    @pytest.fixture
    def store_factory(self, pg_dsn):
        return functools.partial(PostgresStore, pg_dsn)


class Echo(Agent):
    async def reply(self, msg: object) -> Msg:
        return Msg(self.name, "ok", "assistant")


async def test_agents_save_and_load_through_the_session_functions(pg_store) -> None:
    alice = Echo("alice")
    await alice("hello")
    await save_session(pg_store, "chat", alice)
    again = Echo("alice")
    await load_session(pg_store, "chat", again)
    assert [m.content for m in again.memory] == ["hello", "ok"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.append("r", [{"ok": 1}, ["not", "a", "dict"]]), r"entry \[1\] must be a dict"),
        (lambda s: s.append("r", [{"ok": 1}, {"bad": float("nan")}]), r"entry \[1\].*bad"),
        (lambda s: s.append("r", [{"\ud800": 1}]), r"entry \[0\]"),
        (lambda s: s.save("s", {"a": {"ok": 1}, "b\x00": {}}), "NUL"),
        (lambda s: s.save("s", {"a": {"ok": 1}, "b": "text"}), "must be a dict"),
        (lambda s: s.save("s", {"a": {"ok": 1}, 7: {}}), "agent names must be strings"),
        (lambda s: s.load("'; DROP TABLE x; --"), "invalid session id"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(pg_store, call, match) -> None:
    with pytest.raises(StoreError, match=match):
        await call(pg_store)
    assert await pg_store.journal("r") == []
    assert await pg_store.load("s") == {}


def test_writers_in_several_processes_all_land_whole(pg_dsn: str) -> None:
    children = [writer(pg_dsn, f"p{n}", 10, 10) for n in range(3)]
    assert [finished(child) for child in children] == [0, 0, 0]

    async def check() -> None:
        async with PostgresStore(pg_dsn) as store:
            counts = check_whole_batches(await store.journal("run"), 10)
            assert counts == {f"p{n}": 10 for n in range(3)}
            states = await store.load("s")
            assert states == {f"p{n}-{x}": {"n": 9} for n in range(3) for x in "ab"}

    asyncio.run(check())


def test_a_writer_killed_mid_transaction_leaves_nothing_half_written(pg_dsn: str) -> None:
    """SIGKILL lands at a random point of a stream of big batches: what is stored is a run of
    whole batches, and the two agents a save writes together are always of the same step."""
    for delay in (0.05, 0.3, 0.7):
        child = writer(pg_dsn, f"k{delay}", 100_000, 400)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        assert finished(child) == -signal.SIGKILL

    async def check() -> None:
        async with PostgresStore(pg_dsn) as store:
            check_whole_batches(await store.journal("run"), 400)
            states = await store.load("s")
            for who in ("k0.05", "k0.3", "k0.7"):
                assert states.get(f"{who}-a") == states.get(f"{who}-b")
            await store.append("run", [{"who": "after", "batch": 0, "i": 0}])
            assert (await store.journal("run"))[-1]["who"] == "after"

    asyncio.run(check())


async def test_processes_creating_the_schema_at_once_agree(pg_dsn: str) -> None:
    children = [writer(pg_dsn, f"p{n}", 1, 3) for n in range(3)]
    assert [await asyncio.to_thread(finished, child) for child in children] == [0, 0, 0]


async def test_a_server_that_goes_away_is_a_clear_error_and_the_store_recovers(
    pg_server, pg_dsn
) -> None:
    async with PostgresStore(pg_dsn, timeout=5) as store:
        await store.append("r", [{"n": 0}])
        await asyncio.to_thread(pg_server.stop)
        try:
            for call in (store.append("r", [{"n": 1}]), store.journal("r"), store.load("s")):
                with pytest.raises(StoreError, match="is the server running") as caught:
                    await call
                assert pg_server.password not in str(caught.value)
        finally:
            await asyncio.to_thread(pg_server.start)
        await store.append("r", [{"n": 1}])  # the pool replaces its dead connections
        assert await store.journal("r") == [{"n": 0}, {"n": 1}]


async def test_a_store_made_while_the_server_is_down_connects_once_it_is_up(
    pg_server, pg_dsn
) -> None:
    await asyncio.to_thread(pg_server.stop)
    try:
        async with PostgresStore(pg_dsn, timeout=5) as store:
            with pytest.raises(StoreError, match="is the server running"):
                await store.load("s")
            await asyncio.to_thread(pg_server.start)
            assert await store.load("s") == {}
    finally:
        if not pg_server.running:
            await asyncio.to_thread(pg_server.start)


@pytest.mark.parametrize("password", ["wrong-password", "p@ss:w/rd%41?"])
async def test_a_wrong_password_is_a_store_error_without_the_password(pg_server, password):
    dsn = pg_server.dsn(
        password=password.replace("%", "%25")
        .replace("@", "%40")
        .replace("/", "%2F")
        .replace("?", "%3F")
        .replace(":", "%3A")
    )
    async with PostgresStore(dsn, timeout=5) as store:
        with pytest.raises(StoreError, match="password authentication failed") as caught:
            await store.load("s")
    for text in (str(caught.value), repr(store), repr(caught.value.__cause__)):
        assert password not in text and "wrong-password" not in text
    assert "***" in repr(store)
    async with PostgresStore(pg_server.dsn(password="x"), password=password) as store:
        with pytest.raises(StoreError) as caught:
            await store.load("s")
        assert password not in str(caught.value)


async def test_nothing_listening_is_a_store_error(tmp_path) -> None:
    store = PostgresStore(f"postgresql://u:secret-pw@/db?host={tmp_path}", timeout=2)
    with pytest.raises(StoreError, match=r"cannot load session 's'.*is the server running") as c:
        await store.load("s")
    assert "secret-pw" not in str(c.value)
    with pytest.raises(StoreError, match="dsn must be"):
        PostgresStore("host=localhost password=secret-pw")


async def test_it_pickles_without_its_pool_and_works_on_another_loop(pg_store) -> None:
    await pg_store.save("s", {"a": {"n": 1}})
    copy = pickle.loads(pickle.dumps(pg_store))
    assert repr(copy) == repr(pg_store)

    def elsewhere() -> dict[str, object]:
        async def load() -> dict[str, object]:
            async with copy:
                return await copy.load("s")

        return asyncio.run(load())

    assert await asyncio.to_thread(elsewhere) == {"a": {"n": 1}}


async def test_a_cancelled_append_writes_all_or_nothing(pg_store) -> None:
    for delay in (0, 0.001, 0.005, 0.02):
        task = asyncio.create_task(
            pg_store.append("run", [{"who": delay, "batch": 0, "i": i} for i in range(300)])
        )
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    check_whole_batches(await pg_store.journal("run"), 300)
    await pg_store.append("run", [{"who": "last", "batch": 0, "i": i} for i in range(300)])
    assert (await pg_store.journal("run"))[-1]["who"] == "last"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>not a database</html>",
        b"R\x00\x00\x00\x08\x00\x00",  # half an authentication request
        None,  # a server that accepts and never says a word
    ],
)
async def test_a_peer_that_is_not_postgresql_is_a_store_error(answer) -> None:
    handlers: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append((asyncio.current_task(), writer))  # type: ignore[arg-type]
        try:
            await reader.read(8)
            if answer is None:
                await reader.read()  # until the client gives up
            else:
                writer.write(answer)
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dsn = f"postgresql://u:secret-pw@127.0.0.1:{port}/db?sslmode=disable"
    try:
        async with PostgresStore(dsn, timeout=1) as store:
            with pytest.raises(StoreError, match="cannot append to run 'r'") as caught:
                await store.append("r", [{"n": 1}])
        assert "secret-pw" not in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()  # before Python 3.12.1 this does not wait for the handlers
        for task, writer in handlers:
            writer.close()
            await asyncio.gather(task, return_exceptions=True)
