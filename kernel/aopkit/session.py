"""Sessions: save and load agents' state (memory included) in an embedded store.

A store maps ``session id -> {agent name -> state}``. Saving several agents is atomic: a crash
mid-save leaves the previous state of the session whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import AopkitError, DecodeError, StoreError
from .events import StateLoaded, StateSaved

if TYPE_CHECKING:
    from .agent import Agent

_SESSION_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

State = dict[str, Any]


def check_session_id(session_id: str) -> str:
    """Session ids become file names: letters, digits, ``_ . -``, not starting with a dot."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise StoreError(
            f"invalid session id {session_id!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return session_id


class Store(Protocol):
    async def save(self, session_id: str, states: dict[str, State]) -> None: ...
    async def load(self, session_id: str) -> dict[str, State]: ...


class JSONFileStore:
    """One JSON file per session under ``root``, replaced atomically on every save."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, session_id: str) -> Path:
        return self.root / f"{check_session_id(session_id)}.json"

    async def save(self, session_id: str, states: dict[str, State]) -> None:
        await asyncio.to_thread(self._save, self._path(session_id), states)

    async def load(self, session_id: str) -> dict[str, State]:
        return await asyncio.to_thread(self._load, self._path(session_id))

    def _load(self, path: Path) -> dict[str, State]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path}: expected a JSON object of agent states")
        return data

    def _save(self, path: Path, states: dict[str, State]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        merged = {**self._load(path), **states}
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(merged, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


class SQLiteStore:
    """Agent states in one SQLite table; a session's save is one transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS agent_state ("
                " session TEXT NOT NULL, agent TEXT NOT NULL, state TEXT NOT NULL,"
                " PRIMARY KEY (session, agent))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    async def save(self, session_id: str, states: dict[str, State]) -> None:
        check_session_id(session_id)
        rows = [(session_id, name, json.dumps(s, ensure_ascii=False)) for name, s in states.items()]
        await asyncio.to_thread(self._save, rows)

    def _save(self, rows: list[tuple[str, str, str]]) -> None:
        db = self._connect()
        try:
            with db:  # one transaction: all agents or none
                db.executemany(
                    "INSERT INTO agent_state (session, agent, state) VALUES (?, ?, ?) "
                    "ON CONFLICT (session, agent) DO UPDATE SET state = excluded.state",
                    rows,
                )
        finally:
            db.close()

    async def load(self, session_id: str) -> dict[str, State]:
        return await asyncio.to_thread(self._load, check_session_id(session_id))

    def _load(self, session_id: str) -> dict[str, State]:
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT agent, state FROM agent_state WHERE session = ?", (session_id,)
            ).fetchall()
        finally:
            db.close()
        return {agent: json.loads(state) for agent, state in rows}


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
