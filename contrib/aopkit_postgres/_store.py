"""A session and journal store on PostgreSQL, shared by every process and node that reaches it.

Guarantees (each call is one transaction):

- a save of several agents lands whole or not at all; concurrent saves of one session merge
  (every agent's latest state is kept), from any number of tasks, processes and machines;
- an append of journal entries lands whole or not at all, after every batch appended to the
  run before it: concurrent appenders queue on the run's row, so batches never interleave and
  the sequence numbers have no gaps;
- a writer killed mid-transaction (SIGKILL, a lost node) leaves nothing half-written: the
  server rolls it back;
- a claim (``async with store.claim(name):``) is a session-level advisory lock held on a
  connection of its own: one holder at a time in the whole cluster, freed by the server when
  the holder's connection or process dies;
- the tables are created on first use, under a lock, so processes starting together agree;
- a server that cannot be reached, refuses the login, or fails mid-call gives a
  :class:`aopkit.StoreError` naming the store (the DSN without its password) and what to do.
  A connection the server dropped (a restart) is replaced and the call tried once more, unless
  it failed while committing: then the error says the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from aopkit import Claimed, StoreError
from aopkit.session import (  # the embedded stores' rules and messages, shared
    check_run_id,
    check_session_id,
    claim_digest,
    decode_entry,
    decode_state,
    encode_entries,
    encode_state,
)

T = TypeVar("T")
State = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS aopkit_agent_state (
    session text NOT NULL, agent text NOT NULL, state text NOT NULL,
    PRIMARY KEY (session, agent));
CREATE TABLE IF NOT EXISTS aopkit_runs (run text PRIMARY KEY, length bigint NOT NULL);
CREATE TABLE IF NOT EXISTS aopkit_journal (
    run text NOT NULL, seq bigint NOT NULL, entry text NOT NULL,
    PRIMARY KEY (run, seq));
"""
SCHEMA_LOCK = 0x616F706B6974  # "aopkit": one advisory lock serialises schema creation

# The connection failed (or never opened): the call may be tried again on a fresh one.
CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


class PostgresStore:
    """``PostgresStore("postgresql://user:password@host:5432/db")``: a session store (see
    :mod:`aopkit.session`) and a run journal on PostgreSQL through pooled asyncpg connections.

    ``password`` may be given apart from the DSN; ``max_size`` bounds the pool of each event
    loop; ``timeout`` is the seconds a connection may take to open. Close it with
    ``await store.aclose()`` (or ``async with``). It pickles without its pool, so a Ray actor
    can be given one (see :mod:`aopkit_ray`): every node then saves to the same database.
    """

    def __init__(
        self,
        dsn: str,
        *,
        password: str | None = None,
        max_size: int = 10,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.startswith(("postgres://", "postgresql://")):
            raise StoreError(
                "PostgresStore: dsn must be a 'postgresql://user:password@host:port/database' URL"
            )
        self.dsn, self.password, self.max_size, self.timeout = dsn, password, max_size, timeout
        self._secrets = _secrets(dsn, password)
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[asyncpg.Pool]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"PostgresStore({_redacted(self.dsn)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "dsn": self.dsn,
            "password": self.password,
            "max_size": self.max_size,
            "timeout": self.timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("dsn"), **state)  # type: ignore[misc]

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close this event loop's connections (the store opens new ones if used again)."""
        ready = self._pools.pop(asyncio.get_running_loop(), None)
        if ready is not None and ready.done() and ready.exception() is None:
            await ready.result().close()

    # -- sessions ----------------------------------------------------------------------------
    async def save(self, session_id: str, states: dict[str, State]) -> None:
        check_session_id(session_id)
        where = f"{self!r}, session {session_id!r}"
        rows = sorted(  # one lock order for every saver: concurrent saves never deadlock
            (_agent_name(where, agent), encode_state(where, agent, state))
            for agent, state in states.items()
        )

        async def write(db: asyncpg.Connection) -> None:
            await self._read(db, where, session_id)  # refuse to write into a corrupt session
            await db.execute(
                "INSERT INTO aopkit_agent_state (session, agent, state)"
                " SELECT $1, agent, state FROM unnest($2::text[], $3::text[]) AS t(agent, state)"
                " ON CONFLICT (session, agent) DO UPDATE SET state = excluded.state",
                session_id,
                [agent for agent, _ in rows],
                [text for _, text in rows],
            )

        await self._transaction(f"save session {session_id!r}", write)

    async def load(self, session_id: str) -> dict[str, State]:
        check_session_id(session_id)
        where = f"{self!r}, session {session_id!r}"
        return await self._transaction(
            f"load session {session_id!r}", lambda db: self._read(db, where, session_id)
        )

    async def _read(self, db: asyncpg.Connection, where: str, session_id: str) -> dict[str, State]:
        rows = await db.fetch(
            "SELECT agent, state FROM aopkit_agent_state WHERE session = $1 ORDER BY agent",
            session_id,
        )
        return {row["agent"]: decode_state(where, row["agent"], row["state"]) for row in rows}

    # -- journals ----------------------------------------------------------------------------
    async def append(self, run: str, entries: Sequence[dict[str, Any]]) -> None:
        """Append ``entries`` to ``run``'s journal, all or none, after every earlier batch."""
        check_run_id(run)
        where = f"{self!r}, run {run!r}"
        texts = encode_entries(where, entries)
        if not texts:
            return

        async def write(db: asyncpg.Connection) -> None:
            length = await db.fetchval(  # the run's row stays locked until this commits
                "INSERT INTO aopkit_runs (run, length) VALUES ($1, $2) ON CONFLICT (run)"
                " DO UPDATE SET length = aopkit_runs.length + excluded.length RETURNING length",
                run,
                len(texts),
            )
            await db.execute(
                "INSERT INTO aopkit_journal (run, seq, entry)"
                " SELECT $1, $2 + t.n, t.entry FROM unnest($3::text[]) WITH ORDINALITY"
                " AS t(entry, n)",
                run,
                length - len(texts) - 1,
                texts,
            )

        await self._transaction(f"append to run {run!r}", write)

    async def journal(self, run: str) -> list[dict[str, Any]]:
        """Every entry appended to ``run``, in order (empty for a run never written)."""
        check_run_id(run)
        where = f"{self!r}, run {run!r}"

        async def read(db: asyncpg.Connection) -> list[dict[str, Any]]:
            rows = await db.fetch(
                "SELECT seq, entry FROM aopkit_journal WHERE run = $1 ORDER BY seq", run
            )
            return [decode_entry(f"{where}, entry {r['seq']}", r["entry"]) for r in rows]

        return await self._transaction(f"read the journal of run {run!r}", read)

    # -- claims ------------------------------------------------------------------------------
    @asynccontextmanager
    async def claim(self, name: str, *, wait: float = 0.0) -> AsyncIterator[None]:
        """An exclusive claim on ``name`` (see :class:`aopkit.session.ClaimingStore`): an
        advisory lock whose 64-bit key is a digest of ``name``, on a connection opened for the
        claim and closed with it. Two names whose keys collided would only take turns."""
        key = int.from_bytes(claim_digest(repr(self), name)[:8], "big", signed=True)
        what = f"claim {name!r:.80}"
        try:
            db = await asyncpg.connect(self.dsn, password=self.password, timeout=self.timeout)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise self._error(what, exc, "; is the server running and reachable?") from None
        try:
            await self._lock(db, what, key, name, wait)
            yield
        finally:
            try:
                await db.close(timeout=self.timeout)
            except BaseException as exc:
                db.terminate()  # the server frees the lock when it sees the connection go
                if not isinstance(exc, Exception):
                    raise  # a cancellation goes on; a broken connection has freed it already

    async def _lock(
        self, db: asyncpg.Connection, what: str, key: int, name: str, wait: float
    ) -> None:
        deadline = time.monotonic() + wait
        pause = 0.005
        try:
            while not await db.fetchval("SELECT pg_try_advisory_lock($1)", key):
                if time.monotonic() >= deadline:
                    after = f", still after {wait:g} s" if wait else ""
                    raise Claimed(
                        f"{self!r}: {name!r:.80} is claimed by someone else (another process, "
                        f"or another task of this one){after}"
                    )
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.1)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise self._error(what, exc, "") from None

    # -- connections -------------------------------------------------------------------------
    async def _transaction(
        self, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """``work(connection)`` in one transaction; PostgreSQL's errors as StoreError."""
        for attempt in (1, 2):
            committing = False
            try:
                pool = await self._pool()
                async with pool.acquire(timeout=self.timeout) as db, db.transaction():
                    result = await work(db)
                    committing = True
                return result
            except StoreError:
                raise
            except CONNECTION_ERRORS as exc:
                if attempt == 1 and not committing:
                    continue  # a connection the server dropped: once more, on a new one
                outcome = (
                    "; it failed while committing, so it may or may not have been written"
                    if committing
                    else "; is the server running and reachable?"
                )
                raise self._error(what, exc, outcome) from None
            except asyncpg.PostgresError as exc:
                raise self._error(what, exc, "") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pool(self) -> asyncpg.Pool:
        """This event loop's pool, with the schema created; a failed start is tried again on
        the next call."""
        loop = asyncio.get_running_loop()
        ready = self._pools.get(loop)
        if ready is None:
            ready = self._pools[loop] = asyncio.ensure_future(self._start())
        try:
            return await asyncio.shield(ready)
        except BaseException:
            if ready.done() and self._pools.get(loop) is ready:
                del self._pools[loop]
            raise

    async def _start(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.dsn,
            password=self.password,
            min_size=0,
            max_size=self.max_size,
            timeout=self.timeout,
        )
        try:
            async with pool.acquire(timeout=self.timeout) as db, db.transaction():
                await db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                await db.execute(SCHEMA)
        except BaseException:
            pool.terminate()
            raise
        return pool

    def _error(self, what: str, exc: BaseException, outcome: str) -> StoreError:
        """A StoreError for ``exc``, without any password in it."""
        detail = str(exc) or type(exc).__name__
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return StoreError(f"{self!r}: cannot {what}: {detail}{outcome}")


def _secrets(dsn: str, password: str | None) -> list[str]:
    """Every spelling of the password that a message could quote."""
    found = [password] if password else []
    raw = urlsplit(dsn).password
    if raw:
        found += [raw, unquote(raw), quote(unquote(raw), safe="")]
    return sorted(set(found), key=len, reverse=True)


def _redacted(dsn: str) -> str:
    """The DSN with its password as ``***``."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _agent_name(where: str, agent: str) -> str:
    """A text column cannot hold NUL (JSON text escapes it; a name is stored raw)."""
    if isinstance(agent, str) and "\x00" in agent:
        raise StoreError(f"{where}: agent name {agent!r} holds a NUL character")
    return agent
