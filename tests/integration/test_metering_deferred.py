"""Settling after the response (the server's ``settle_after_response``): the
request is still metered exactly once and the spend cap still holds under
concurrency, because the reservation taken at admission bounds spend until
the settlement lands.  Real Postgres and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.pipeline.steps.spend import cap_window
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.spend import RedisSpend, cap_keys
from tests.integration.test_metering_spend import (  # the same assertions, run with deferred settling
    test_200_concurrent_requests_never_spend_past_the_cap_and_every_layer_agrees,  # noqa: F401
    test_a_tenant_cap_spans_all_its_keys_of_one_environment,  # noqa: F401
)
from tests.support.metering import MESSAGES, Harness, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

CAP = 1_000


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path)
    h = await build_harness(database, redis_client, settings, settle_after_response=True)
    yield h
    await h.close()


async def test_each_request_is_metered_once_after_its_response(harness: Harness, redis_client: Redis, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="daily")
    replies = [await harness.chat(key, max_tokens=5) for _ in range(3)]
    assert all(isinstance(r, dict) and r["object"] == "chat.completion" for r in replies)
    admitted = await harness.admit(key, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 5})
    chunks = [c async for c in harness.pipeline.stream(admitted)]
    assert chunks

    await harness.pipeline.drain()
    await harness.pipeline.drain()  # draining twice changes nothing
    rows = await harness.rows(tenant)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"success"}
    logged = sum(r["cost_micros"] or 0 for r in rows)
    window = cap_window("daily", rows[0]["created_at"])
    assert await RedisSpend(redis_client).read(cap_keys(tenant, "key", key.key_id, window.window_id)[0]) == (logged, 0)


async def test_a_refused_request_is_metered_too(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    reply = await harness.chat(key, model="no-such-model")
    assert not isinstance(reply, dict) and reply.http_status == 404
    rows = await harness.rows(tenant)
    assert len(rows) == 1 and rows[0]["http_status"] == 404
