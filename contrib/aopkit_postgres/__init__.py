"""aopkit on PostgreSQL: a session and journal store every node of a cluster can reach.

``store = aopkit_postgres.PostgresStore("postgresql://user:password@host/db")`` is a session
store (``save``/``load``) and a run journal (``append``/``journal``) on one database, through a
pool of asyncpg connections. SQLite stays the embedded default.
"""

from __future__ import annotations

from ._store import PostgresStore

__all__ = ["PostgresStore"]
