"""A live request is planned while admission runs; admission still decides first."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from tests.support.metering import Harness, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path) -> AsyncIterator[Harness]:
    # No live router: planning a live request fails with "no provider" — after admission has spoken.
    h = await build_harness(database, redis_client, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    yield h
    await h.close()


async def test_admission_errors_win_over_planning_errors_and_nothing_leaks(
    harness: Harness, pg_db: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, environment="live", rate_limits={"rpm": 1})
    first = await harness.chat(key)
    assert isinstance(first, RelayError) and first.kind == ErrorKind.NO_PROVIDER_AVAILABLE
    second = await harness.chat(key)
    assert isinstance(second, RelayError) and second.kind == ErrorKind.RATE_LIMIT_EXCEEDED
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()  # an unretrieved task exception would be reported now
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    rows = await harness.rows(tenant)
    assert [r["http_status"] for r in rows] == [503, 429]
