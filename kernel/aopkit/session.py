"""Sessions: save and load agents' state (memory included) in an embedded store.

A store maps ``session id -> {agent name -> state}``, and keeps the journals of durable runs
(``run id -> [entry, ...]``, see :mod:`aopkit.durable`). Guarantees, for both stores:

- saving several agents is atomic: a crash (even SIGKILL) mid-save leaves the session's previous
  state whole, and the temporary file a killed save leaves is removed by the next save or load;
- concurrent saves of one session, from tasks, threads or processes, are merged: every agent's
  state is kept;
- a store that cannot be read (corrupt, truncated, not a file, not readable) raises
  :class:`StoreError` naming the store and what is wrong, and a save onto it refuses rather than
  overwriting it, so that it can be recovered by hand;
- states are strict JSON (see :mod:`aopkit.jsontext`): a state that would not load back (NaN, a
  lone surrogate) is refused at save, naming the agent and the field;
- a journal append is atomic (a batch is stored whole or not at all, also under SIGKILL),
  durable when it returns, and ordered: concurrent appenders from tasks, threads and processes
  never interleave a batch or lose one. An entry that is not a strict-JSON object refuses the
  whole batch;
- a claim (``async with store.claim(name):``) is held by one holder at a time, across tasks,
  threads and processes, and dies with its holder (the OS releases it, even after SIGKILL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import files, jsontext
from .errors import AopkitError, Claimed, DecodeError, EncodeError, StoreError
from .events import StateLoaded, StateSaved

if TYPE_CHECKING:
    from .agent import Agent

_SESSION_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

State = dict[str, Any]

_LEFT_ALONE = "it is left as it is, for you to recover or move away"


def check_session_id(session_id: str) -> str:
    """Session ids become file names: letters, digits, ``_ . -``, not starting with a dot."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise StoreError(
            f"invalid session id {_shown(session_id)}: use 1-128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return session_id


def _shown(given: object) -> str:
    """``given`` as quoted in an error: hostile ids can be kilobytes long."""
    text = repr(given)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


class Store(Protocol):
    async def save(self, session_id: str, states: dict[str, State]) -> None: ...
    async def load(self, session_id: str) -> dict[str, State]: ...


class JournalStore(Store, Protocol):
    """A store that also keeps run journals: what a durable run needs."""

    async def append(self, run: str, entries: Sequence[dict[str, Any]]) -> None: ...
    async def journal(self, run: str) -> list[dict[str, Any]]: ...


class ClaimingStore(Protocol):
    """A store that can also give one holder at a time an exclusive claim on a name.

    ``async with store.claim(name, wait=seconds):`` holds the claim for the block, or raises
    :class:`~aopkit.errors.Claimed` when someone else (another process, or another task of
    this one) still holds it after ``wait`` seconds (0: at once). A claim is not re-entrant,
    and it dies with its holder: when the process dies, even by SIGKILL, it is free. A durable
    run holds ``run:<id>`` for its whole block (a second process is refused), a served turn
    ``session:<id>`` from load to save (a second process waits). Optional: a store without
    ``claim`` works as before, without these refusals and waits.
    """

    def claim(self, name: str, *, wait: float = 0.0) -> AbstractAsyncContextManager[None]: ...


def claim_of(store: object) -> ClaimingStore | None:
    """``store`` if it can claim names (it has a ``claim`` method), else None."""
    return store if callable(getattr(store, "claim", None)) else None  # type: ignore[return-value]


def claim_digest(where: str, name: str) -> bytes:
    """A digest of a claim's ``name``: what names its lock (a file name, an advisory lock
    key), so that any name is safe there; a name that is no text is a StoreError."""
    if not isinstance(name, str) or not name:
        raise StoreError(f"{where}: a claim's name must be a non-empty str, got {_shown(name)}")
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()


@asynccontextmanager
async def _claimed_file(where: str, path: Path, name: str, wait: float) -> AsyncIterator[None]:
    """The claim on ``name`` held through the lock file ``path`` (see :func:`files.claim`)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = await files.claim(path, wait=wait)
    except files.Held:
        raise Claimed(
            f"{where}: {_shown(name)} is claimed by someone else (another process, or another task "
            f"of this one){f', still after {wait:g} s' if wait else ''}"
        ) from None
    except OSError as exc:
        raise StoreError(
            f"{where}: cannot claim {_shown(name)} (lock file {path}): {exc.strerror or exc}"
        ) from exc
    try:
        yield
    finally:
        files.release(path, fd)


def check_run_id(run: str) -> str:
    """Run ids follow the rules of session ids (they name files too)."""
    try:
        return check_session_id(run)
    except StoreError:
        raise StoreError(
            f"invalid run id {_shown(run)}: use 1-128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        ) from None


def encode_entries(where: str, entries: Sequence[dict[str, Any]]) -> list[str]:
    """Each entry as strict JSON text, or a StoreError naming the first bad one."""
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, Sequence):
        raise StoreError(f"{where}: entries must be a list of dicts, got {_type(entries)}")
    texts = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise StoreError(f"{where}: entry [{index}] must be a dict, got {_type(entry)}")
        try:
            texts.append(jsontext.dumps(entry, check_depth=False))
        except EncodeError as exc:
            raise StoreError(f"{where}: cannot journal entry [{index}]: {exc}") from None
    return texts


def _type(value: object) -> str:
    return type(value).__name__


def decode_entry(where: str, text: str | bytes) -> dict[str, Any]:
    """One journal entry from its stored JSON text, or a StoreError saying what is wrong."""
    try:
        entry = jsontext.loads(text, check_depth=False)
    except DecodeError as exc:
        raise StoreError(f"{where} is corrupt ({exc}); {_LEFT_ALONE}") from None
    if not isinstance(entry, dict):
        raise StoreError(f"{where} is corrupt ({_kind(entry)}, not an object); {_LEFT_ALONE}")
    return entry


def decode_state(where: str, agent: str, text: str | bytes) -> State:
    """One agent's state from its stored JSON text, or a StoreError saying what is wrong."""
    try:
        state = jsontext.loads(text, check_depth=False)
    except DecodeError as exc:
        raise StoreError(
            f"{where}: the state of agent {agent!r} is corrupt ({exc}); {_LEFT_ALONE}"
        ) from None
    return _check_state(where, agent, state)


def _check_state(where: str, agent: str, state: Any) -> State:
    if not isinstance(state, dict):
        raise StoreError(
            f"{where}: the state of agent {agent!r} is {_kind(state)}, not a JSON object; "
            f"{_LEFT_ALONE}"
        )
    return state


def _kind(value: Any) -> str:
    """What a loaded JSON value is, in JSON's words."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    kinds = ((list, "an array"), (str, "a string"), ((int, float), "a number"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), "an object")


def encode_state(where: str, agent: str, state: Any) -> str:
    """An agent's state as JSON text that will load back, or a StoreError naming the field."""
    if not isinstance(agent, str):
        raise StoreError(f"{where}: agent names must be strings, got {agent!r:.40}")
    if not isinstance(state, dict):
        raise StoreError(f"{where}: the state of agent {agent!r} must be a dict")
    try:
        jsontext.dumps(agent)
        return jsontext.dumps(state, check_depth=False)
    except EncodeError as exc:
        raise StoreError(f"{where}: cannot save the state of agent {agent!r}: {exc}") from None


class JSONFileStore:
    """One JSON file per session under ``root``, replaced atomically on every save.

    Saves merge into the file under a lock (``.<session>.json.lock`` beside it, kept), so
    concurrent saves from threads and processes all land; loads take the lock shared.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"JSONFileStore({os.fspath(self.root)!r})"

    def _path(self, session_id: str) -> Path:
        return self.root / f"{check_session_id(session_id)}.json"

    async def save(self, session_id: str, states: dict[str, State]) -> None:
        await asyncio.to_thread(self._save, self._path(session_id), states)

    async def load(self, session_id: str) -> dict[str, State]:
        return await asyncio.to_thread(self._load, self._path(session_id))

    def _load(self, path: Path) -> dict[str, State]:
        if not self.root.exists():
            return {}
        try:
            with files.locked(path, shared=True):
                return self._read(path)
        except OSError as exc:
            raise StoreError(f"cannot load session file {path}: {exc.strerror or exc}") from exc

    def _read(self, path: Path) -> dict[str, State]:
        """The session's states; the caller holds the lock."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = jsontext.loads(raw, check_depth=False)
        except DecodeError as exc:
            raise StoreError(f"session file {path} is corrupt ({exc}); {_LEFT_ALONE}") from None
        if not isinstance(data, dict):
            raise StoreError(
                f"session file {path} is corrupt ({_kind(data)}, not an object of agent "
                f"states); {_LEFT_ALONE}"
            )
        for agent, state in data.items():
            _check_state(f"session file {path}", agent, state)
        return data

    def _save(self, path: Path, states: dict[str, State]) -> None:
        where = f"session file {path}"
        texts = {agent: encode_state(where, agent, state) for agent, state in states.items()}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with files.locked(path):
                kept = {
                    agent: jsontext.dumps(state, check_depth=False)
                    for agent, state in self._read(path).items()
                    if agent not in texts
                }
                members = (f"{jsontext.dumps(a)}:{t}" for a, t in {**kept, **texts}.items())
                text = "{" + ",".join(members) + "}"
                files.replace_atomically(path, text.encode("utf-8"))
        except OSError as exc:
            raise StoreError(f"cannot save session file {path}: {exc.strerror or exc}") from exc

    def _journal_path(self, run: str) -> Path:
        return self.root / f"{check_run_id(run)}.journal"

    def claim(self, name: str, *, wait: float = 0.0) -> AbstractAsyncContextManager[None]:
        """An exclusive claim on ``name`` (see :class:`ClaimingStore`): an ``flock`` on
        ``.<digest>.claim`` in the store's folder, removed when the claim ends."""
        digest = claim_digest(repr(self), name).hex()[:32]
        return _claimed_file(repr(self), self.root / f".{digest}.claim", name, wait)

    async def append(self, run: str, entries: Sequence[dict[str, Any]]) -> None:
        path = self._journal_path(run)
        texts = encode_entries(f"journal {path}", entries)
        if texts:
            line = "[" + ",".join(texts) + "]"
            record = f"{zlib.crc32(line.encode()):08x} {line}\n".encode()
            await asyncio.to_thread(self._append, path, record)

    def _append(self, path: Path, record: bytes) -> None:
        """Write one line, whole or not at all: a line a killed writer tore is cut off first,
        and a failed write is cut back off."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with files.locked(path):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
                try:
                    size = _without_torn_tail(fd)
                    try:
                        files.write_all(fd, record)
                        os.fsync(fd)
                    except BaseException:
                        os.ftruncate(fd, size)
                        raise
                finally:
                    os.close(fd)
                if size == 0:
                    files.fsync_directory(self.root)
        except OSError as exc:
            raise StoreError(f"cannot append to journal {path}: {exc.strerror or exc}") from exc

    async def journal(self, run: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._journal, self._journal_path(run))

    def _journal(self, path: Path) -> list[dict[str, Any]]:
        try:
            with files.locked(path, shared=True):
                raw = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read journal {path}: {exc.strerror or exc}") from exc
        *lines, _torn = raw.split(b"\n")  # a killed writer's last line: never acknowledged
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            where = f"journal {path}, line {number}"
            crc, _, batch = line.partition(b" ")
            if crc != b"%08x" % zlib.crc32(batch):
                raise StoreError(f"{where} is corrupt (checksum mismatch); {_LEFT_ALONE}")
            entries.extend(_batch(where, batch))
        return entries


def _batch(where: str, line: bytes) -> list[dict[str, Any]]:
    """The entries of one journal line (a JSON array of objects)."""
    try:
        batch = jsontext.loads(line, check_depth=False)
    except DecodeError as exc:
        raise StoreError(f"{where} is corrupt ({exc}); {_LEFT_ALONE}") from None
    if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
        raise StoreError(f"{where} is corrupt (not an array of objects); {_LEFT_ALONE}")
    return batch


def _without_torn_tail(fd: int) -> int:
    """Cut off a last line that does not end in a newline (a killed writer's); the new size."""
    size = os.fstat(fd).st_size
    end = size
    while end:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        if end == size and chunk.endswith(b"\n"):
            return size
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


class SQLiteStore:
    """Agent states in one SQLite table; a session's save is one transaction.

    A save first reads the session's rows in its (immediate) transaction: if one is corrupt the
    save is refused and nothing is written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._run(
            lambda db: db.execute(
                "CREATE TABLE IF NOT EXISTS agent_state ("
                " session TEXT NOT NULL, agent TEXT NOT NULL, state TEXT NOT NULL,"
                " PRIMARY KEY (session, agent))"
            )
        )
        self._run(
            lambda db: db.execute(
                "CREATE TABLE IF NOT EXISTS journal ("
                " run TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL,"
                " PRIMARY KEY (run, seq))"
            )
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def claim(self, name: str, *, wait: float = 0.0) -> AbstractAsyncContextManager[None]:
        """An exclusive claim on ``name`` (see :class:`ClaimingStore`): an ``flock`` on
        ``.<database file>.<digest>.claim`` beside the database, removed when the claim ends."""
        digest = claim_digest(repr(self), name).hex()[:32]
        database = Path(self.path)
        lock = database.with_name(f".{database.name}.{digest}.claim")
        return _claimed_file(repr(self), lock, name, wait)

    def _run(self, work: Any, *, write: bool = True) -> Any:
        """Run ``work(connection)`` in one transaction (immediate to ``write``: it holds the
        write lock from its first read); SQLite errors as StoreError."""
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(db)
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}; {_LEFT_ALONE}") from None
        finally:
            db.close()

    async def save(self, session_id: str, states: dict[str, State]) -> None:
        check_session_id(session_id)
        await asyncio.to_thread(self._save, session_id, states)

    def _save(self, session_id: str, states: dict[str, State]) -> None:
        where = f"SQLite store {self.path}, session {session_id!r}"
        rows = [
            (session_id, agent, encode_state(where, agent, state))
            for agent, state in states.items()
        ]

        def write(db: sqlite3.Connection) -> None:
            self._read(db, session_id)  # refuse to write into a corrupt session
            db.executemany(
                "INSERT INTO agent_state (session, agent, state) VALUES (?, ?, ?) "
                "ON CONFLICT (session, agent) DO UPDATE SET state = excluded.state",
                rows,
            )

        self._run(write)

    async def load(self, session_id: str) -> dict[str, State]:
        check_session_id(session_id)
        return await asyncio.to_thread(
            self._run, lambda db: self._read(db, session_id), write=False
        )

    def _read(self, db: sqlite3.Connection, session_id: str) -> dict[str, State]:
        where = f"SQLite store {self.path}, session {session_id!r}"
        rows = db.execute(
            "SELECT agent, state FROM agent_state WHERE session = ?", (session_id,)
        ).fetchall()
        return {agent: decode_state(where, agent, state) for agent, state in rows}

    async def append(self, run: str, entries: Sequence[dict[str, Any]]) -> None:
        check_run_id(run)
        texts = encode_entries(f"SQLite store {self.path}, run {run!r}", entries)
        if texts:
            await asyncio.to_thread(self._run, lambda db: self._append(db, run, texts))

    @staticmethod
    def _append(db: sqlite3.Connection, run: str, texts: list[str]) -> None:
        (last,) = db.execute("SELECT max(seq) FROM journal WHERE run = ?", (run,)).fetchone()
        first = (last or 0) + 1
        db.executemany(
            "INSERT INTO journal (run, seq, entry) VALUES (?, ?, ?)",
            [(run, first + i, text) for i, text in enumerate(texts)],
        )

    async def journal(self, run: str) -> list[dict[str, Any]]:
        check_run_id(run)
        rows = await asyncio.to_thread(
            self._run,
            lambda db: db.execute(
                "SELECT seq, entry FROM journal WHERE run = ? ORDER BY seq", (run,)
            ).fetchall(),
            write=False,
        )
        where = f"SQLite store {self.path}, run {run!r}, entry"
        return [decode_entry(f"{where} {seq}", text) for seq, text in rows]


def _by_name(agents: tuple[Agent, ...]) -> dict[str, Agent]:
    named: dict[str, Agent] = {}
    for agent in agents:
        if agent.name in named:
            raise AopkitError(
                f"two agents are named {agent.name!r}; session state is keyed by name"
            )
        named[agent.name] = agent
    return named


async def save_session(store: Store, session_id: str, *agents: Agent) -> None:
    """Save the state of ``agents`` under ``session_id``, all at once."""
    named = _by_name(agents)
    await store.save(session_id, {name: agent.state_dict() for name, agent in named.items()})
    if agents and (kernel := agents[0].kernel).observed:
        kernel.emit(StateSaved(session=session_id, agents=tuple(named)))


async def load_session(store: Store, session_id: str, *agents: Agent) -> None:
    """Restore ``agents`` from ``session_id``. Every state is checked before any agent changes;
    an agent the session does not know is an error."""
    named = _by_name(agents)
    states = await store.load(session_id)
    missing = [name for name in named if name not in states]
    if missing:
        raise StoreError(f"session {session_id!r} has no state for {', '.join(map(repr, missing))}")
    backups = {name: agent.state_dict() for name, agent in named.items()}
    try:
        for name, agent in named.items():
            try:
                agent.load_state_dict(states[name])
            except DecodeError as exc:
                raise exc.under(name) from None
    except Exception:
        for name, agent in named.items():
            agent.load_state_dict(backups[name])
        raise
    if agents and (kernel := agents[0].kernel).observed:
        kernel.emit(StateLoaded(session=session_id, agents=tuple(named)))
