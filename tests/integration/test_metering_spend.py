"""Hard spend caps under concurrency, end to end through the metering pipeline:
admission reserves, settlement charges, the request log, the usage rollup and
billing all agree to the micro-dollar.  Real Postgres and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.api.error_mapping import response_headers
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.steps.spend import cap_window
from relay_server.stack.processes import free_port
from relay_server.storage.postgres.billing import BillingStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.usage import UsageRollupStore
from relay_server.storage.redis.client import create_redis
from relay_server.storage.redis.spend import RedisSpend, cap_keys
from relay_server.workers.billing import BillingWorker
from relay_server.workers.rollup import UsageRollup
from tests.support.metering import Harness, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

CAP = 1_000  # micro-dollars: a few dozen small gpt-4o-mini requests' worst case


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await build_harness(database, redis_client, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    yield h
    await h.close()


async def _sum(db: Database, query: str, *params: object) -> int:
    async with db.system_tx() as conn:
        row = await (await conn.execute(query, params)).fetchone()
    return int(row["s"] or 0)


async def _billing_snapshot(db: Database, tenant_id: str) -> list[tuple]:
    async with db.system_tx() as conn:
        periods = await (
            await conn.execute(
                "SELECT id, environment, status, total_cost, cost_micros, finalized_at FROM billing_periods "
                "WHERE tenant_id = %s ORDER BY id", (tenant_id,),
            )
        ).fetchall()
        lines = await (
            await conn.execute(
                "SELECT id, model_id, request_count, input_tokens, output_tokens, total_cost, cost_micros, created_at "
                "FROM billing_line_items WHERE tenant_id = %s ORDER BY id", (tenant_id,),
            )
        ).fetchall()
    return [tuple(p.values()) for p in periods] + [tuple(line.values()) for line in lines]


async def test_200_concurrent_requests_never_spend_past_the_cap_and_every_layer_agrees(
    harness: Harness, database: Database, redis_client: Redis, pg_db: TestDatabase
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="daily")

    results = await asyncio.gather(*(harness.chat(key, max_tokens=40) for _ in range(200)))

    served = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, RelayError)]
    assert len(served) + len(refused) == 200
    assert served and refused, "a cap this small must both serve and refuse"
    assert {e.kind for e in refused} == {ErrorKind.SPEND_CAP_EXCEEDED}
    assert all(e.http_status == 402 and e.code == "spend_cap_exceeded" for e in refused)
    assert ("x-should-retry", "false") in response_headers(refused[0], "req_x")
    assert refused[0].details and refused[0].details["window"] == "daily"

    rows = await harness.rows(tenant)
    assert len(rows) == 200
    assert len({r["id"] for r in rows}) == 200
    assert sum(1 for r in rows if r["status"] == "success") == len(served)
    assert all(r["http_status"] == 402 and r["cost_micros"] is None for r in rows if r["status"] != "success")
    logged = sum(r["cost_micros"] or 0 for r in rows)
    assert 0 < logged <= CAP

    # Redis' settled spend is exactly the request log's, and nothing stays reserved.
    window = cap_window("daily", rows[0]["created_at"])
    state = await RedisSpend(redis_client).read(cap_keys(tenant, "key", key.key_id, window.window_id)[0])
    assert state == (logged, 0)

    # Each served request is billed what its own usage costs at the catalog price.
    for row in rows:
        if row["status"] == "success":
            assert row["input_tokens"] > 0 and row["output_tokens"] > 0
            assert row["cost_micros"] == round((row["total_cost"] + row["relay_revenue"]) * 1_000_000)

    await UsageRollup(UsageRollupStore(database)).run_once()
    rolled = await _sum(database, "SELECT sum(cost_micros) AS s FROM usage_daily WHERE tenant_id = %s", tenant)
    assert rolled == logged
    assert await _sum(database, "SELECT sum(request_count) AS s FROM usage_daily WHERE tenant_id = %s", tenant) == 200

    billing = BillingWorker(BillingStore(database))
    await billing.run_once()
    billed = await _sum(database, "SELECT sum(cost_micros) AS s FROM billing_line_items WHERE tenant_id = %s", tenant)
    period = await _sum(database, "SELECT sum(cost_micros) AS s FROM billing_periods WHERE tenant_id = %s", tenant)
    assert billed == period == logged
    snapshot = await _billing_snapshot(database, tenant)
    await billing.run_once()
    assert await _billing_snapshot(database, tenant) == snapshot, "a second billing pass must change nothing"


async def test_the_cap_counts_what_was_spent_before_redis_lost_its_state(
    harness: Harness, redis_client: Redis, pg_db: TestDatabase
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="monthly")
    first = [await harness.chat(key, max_tokens=40) for _ in range(5)]
    assert all(isinstance(r, dict) for r in first)
    spent_before = sum(r["cost_micros"] or 0 for r in await harness.rows(tenant))

    await redis_client.flushdb()  # a Redis restart without persistence
    assert isinstance(await harness.chat(key, max_tokens=40), dict)

    window = cap_window("monthly", (await harness.rows(tenant))[0]["created_at"])
    spent, reserved = await RedisSpend(redis_client).read(cap_keys(tenant, "key", key.key_id, window.window_id)[0])
    total = sum(r["cost_micros"] or 0 for r in await harness.rows(tenant))
    assert spent == total > spent_before and reserved == 0


async def test_a_tenant_cap_spans_all_its_keys_of_one_environment(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn, config={"spend_cap_usd": "0.0005", "spend_cap_window": "daily"})
    keys = [make_key(pg_db.owner_dsn, tenant) for _ in range(3)]
    results = [await harness.chat(keys[i % 3], max_tokens=40) for i in range(60)]
    refused = [r for r in results if isinstance(r, RelayError)]
    assert refused and refused[0].details["scope"] == "tenant"
    assert sum(r["cost_micros"] or 0 for r in await harness.rows(tenant)) <= 500
    # Live traffic of the same tenant has its own budget.
    live = make_key(pg_db.owner_dsn, tenant, environment="live")
    err = await harness.chat(live, max_tokens=40)
    assert isinstance(err, RelayError) and err.kind is ErrorKind.NO_PROVIDER_AVAILABLE  # admitted, then no live route


async def test_a_request_larger_than_the_whole_cap_is_refused_with_its_price(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=100, cap_window="total")
    err = await harness.chat(key)  # no max_tokens: the model's 16384-token maximum must be reserved
    assert isinstance(err, RelayError) and err.code == "spend_cap_exceeded"
    assert err.details["spent_usd"] == "0.000000" and float(err.details["request_max_usd"]) > 0.0001
    assert "could cost up to" in err.message
    assert isinstance(await harness.chat(key, max_tokens=5), dict)


async def test_capped_keys_fail_closed_and_uncapped_keys_flow_when_redis_is_unreachable(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    harness = await build_harness(database, dead, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    try:
        tenant = make_tenant(pg_db.owner_dsn, plan="free")
        capped = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="daily")
        free = make_key(pg_db.owner_dsn, tenant)
        err = await harness.chat(capped, max_tokens=10)
        assert isinstance(err, RelayError) and err.code == "spend_cap_unavailable" and err.http_status == 503
        assert isinstance(await harness.chat(free, max_tokens=10), dict)
        stats = harness.metering.gate.stats
        assert stats.caps_failed_closed == 1 and stats.limits_failed_open == 1
    finally:
        await harness.close()
        await dead.aclose()


async def test_fail_open_setting_lets_capped_keys_through_without_redis(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    settings = settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path, spend_cap_fail_closed=False)
    harness = await build_harness(database, dead, settings)
    try:
        tenant = make_tenant(pg_db.owner_dsn)
        capped = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="daily")
        assert isinstance(await harness.chat(capped, max_tokens=10), dict)
        assert harness.metering.gate.stats.caps_unchecked == 1
    finally:
        await harness.close()
        await dead.aclose()
