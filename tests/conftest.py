"""Shared fixtures: one embedded Postgres per test session, a fresh migrated database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.stack.processes import free_port
from relay_server.stack.redis import RedisHandle, start_redis
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.client import create_redis
from relay_server.storage.redis.wire import RedisWire
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    handle = start_redis(tmp_path_factory.mktemp("redis"), free_port())
    yield handle
    handle.stop()


@pytest_asyncio.fixture
async def redis_client(redis_server: RedisHandle) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def redis_wire(redis_server: RedisHandle, redis_client: Redis) -> AsyncIterator[RedisWire]:
    """The per-request pipelined connection, on the same (flushed) Redis as ``redis_client``."""
    wire = RedisWire.from_url(redis_server.url)
    yield wire
    await wire.close()
