"""A PostgreSQL store on a fresh database of the session's server (tests/contrib/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

pytest.importorskip("asyncpg")

from aopkit_postgres import PostgresStore


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(pg_dsn) as store:
        yield store
