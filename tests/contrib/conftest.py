"""Fixtures the contrib tests share: one real PostgreSQL server for the session (see
tests/pgserver.py) and a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pgserver import PostgresServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> str:
    return pg_server.create_database()
