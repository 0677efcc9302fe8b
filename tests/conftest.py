"""Shared fixtures: one embedded Postgres per test session, a fresh migrated database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from relay_server.storage.postgres.pool import Database
from tests.support.pg import PgCluster, TestDatabase, start_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_db(pg_cluster: PgCluster) -> Iterator[TestDatabase]:
    db = pg_cluster.create_database()
    yield db
    pg_cluster.drop_database(db)


@pytest_asyncio.fixture
async def database(pg_db: TestDatabase) -> AsyncIterator[Database]:
    db = Database(pg_db.owner_dsn, pg_db.app_dsn, min_size=1, max_size=4)
    await db.open()
    yield db
    await db.close()
