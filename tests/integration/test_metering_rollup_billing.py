"""The usage rollup and the billing worker against real Postgres: idempotent,
late rows picked up, several workers at once, live and test kept apart,
finalization once a month has ended."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from relay_server.ids import new_id
from relay_server.storage.postgres.billing import BillingStore, period_id
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.request_log import RequestLogStore, RequestRow
from relay_server.storage.postgres.usage import UsageRollupStore
from relay_server.workers.billing import BillingWorker
from relay_server.workers.rollup import UsageRollup
from tests.support.metering import make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

JAN_10 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _row(tenant: str, key: str, at: datetime, micros: int, *, env: str = "live", model: str = "gpt-4o-mini",
         status: str = "success") -> RequestRow:  # fmt: skip
    return RequestRow(
        id=new_id("req"), created_at=at, tenant_id=tenant, api_key_id=key, environment=env, request_type="chat",
        stream=False, started_at=at, status=status, model_id=model, provider_id="test", input_tokens=10,
        output_tokens=5, total_tokens=15, cache_read_tokens=0, cache_write_tokens=0,
        input_cost=Decimal("0.00000150"), output_cost=Decimal("0.00000300"), total_cost=Decimal("0.00000450"),
        relay_revenue=Decimal("0.00000090"), cost_micros=micros, latency_ms=100, http_status=200,
    )  # fmt: skip


async def _one(db: Database, query: str, *params: object) -> dict:
    async with db.system_tx() as conn:
        return await (await conn.execute(query, params)).fetchone()


async def test_rollup_recomputes_marked_days_idempotently_and_picks_up_late_rows(database: Database, pg_db: TestDatabase) -> None:  # noqa: E501
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, environment="live")
    log = RequestLogStore(database)
    rollup = UsageRollup(UsageRollupStore(database))
    await log.insert([_row(tenant, key.key_id, JAN_10 + timedelta(minutes=i), 7) for i in range(5)])
    await log.insert([_row(tenant, key.key_id, JAN_10, 3, env="test")])
    await log.insert([_row(tenant, key.key_id, JAN_10, 11, status="error")])
    done = await rollup.run_once()
    assert {(b.date, b.environment) for b in done} == {(JAN_10.date(), "live"), (JAN_10.date(), "test")}
    live = await _one(database, "SELECT * FROM usage_daily WHERE tenant_id = %s AND environment = 'live'", tenant)
    assert (live["request_count"], live["cost_micros"], live["error_count"], live["total_tokens"]) == (6, 46, 1, 90)
    assert live["avg_latency_ms"] == 100 and live["total_cost"] == Decimal("0.00002700")
    updated = live["updated_at"]

    assert await rollup.run_once() == []  # nothing marked: nothing done
    late = _row(tenant, key.key_id, JAN_10 + timedelta(hours=3), 100)
    await log.insert([late])
    await log.insert([late])  # a replay of the same row changes nothing
    await rollup.run_once()
    live = await _one(database, "SELECT * FROM usage_daily WHERE tenant_id = %s AND environment = 'live'", tenant)
    assert (live["request_count"], live["cost_micros"]) == (7, 146) and live["updated_at"] > updated
    assert (await _one(database, "SELECT count(*) AS n FROM usage_rollup_pending"))["n"] == 0


async def test_several_rollup_workers_share_the_marks(database: Database, pg_db: TestDatabase) -> None:
    tenants = [make_tenant(pg_db.owner_dsn) for _ in range(3)]
    log = RequestLogStore(database)
    for tenant in tenants:
        key = make_key(pg_db.owner_dsn, tenant, environment="live")
        for day in range(10):
            await log.insert([_row(tenant, key.key_id, JAN_10 + timedelta(days=day), 5) for _ in range(2)])
    workers = [UsageRollup(UsageRollupStore(database), batch=3) for _ in range(3)]
    done = await asyncio.gather(*(w.run_once() for w in workers))
    buckets = [b for d in done for b in d]
    assert len(buckets) == len(set(buckets)) == 30  # each bucket recomputed once, by one worker
    total = await _one(database, "SELECT sum(cost_micros) AS s, sum(request_count) AS n FROM usage_daily")
    assert (total["s"], total["n"]) == (300, 60)


async def test_billing_builds_periods_per_environment_and_finalizes_ended_months_once(
    database: Database, pg_db: TestDatabase
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, environment="live")
    log = RequestLogStore(database)
    await log.insert([_row(tenant, key.key_id, JAN_10, 40), _row(tenant, key.key_id, JAN_10, 2, model="gpt-4o")])
    await log.insert([_row(tenant, key.key_id, JAN_10, 1000, env="test")])
    await log.insert([_row(tenant, key.key_id, JAN_10 + timedelta(days=30), 9)])  # February
    await UsageRollup(UsageRollupStore(database)).run_once()

    store = BillingStore(database)
    worker = BillingWorker(store, finalize_delay=timedelta(hours=1))
    mid_january = datetime(2026, 1, 20, tzinfo=UTC)
    results = await worker.run_once(mid_january)
    assert {r.status for r in results} == {"open"}
    live = await _one(database, "SELECT * FROM billing_periods WHERE id = %s", period_id(tenant, "live", date(2026, 1, 1)))
    test = await _one(database, "SELECT * FROM billing_periods WHERE id = %s", period_id(tenant, "test", date(2026, 1, 1)))
    assert (live["cost_micros"], test["cost_micros"]) == (42, 1000)
    assert live["period_end"] == date(2026, 2, 1)
    lines = await store.periods(tenant, "live", None, 10)
    assert [(p["period_start"], [(li["model_id"], li["cost_micros"]) for li in p["line_items"]]) for p in lines] == [
        (date(2026, 2, 1), [("gpt-4o-mini", 9)]),
        (date(2026, 1, 1), [("gpt-4o", 2), ("gpt-4o-mini", 40)]),
    ]

    # January ended, but not long enough ago: still open.
    assert {r.status for r in await worker.run_once(datetime(2026, 2, 1, 0, 30, tzinfo=UTC))} == {"open"}
    after = datetime(2026, 2, 1, 2, 0, tzinfo=UTC)
    statuses = {(r.period_id, r.status) for r in await asyncio.gather(worker.run_once(after), worker.run_once(after)) for r in r}
    assert (period_id(tenant, "live", date(2026, 1, 1)), "finalized") in statuses
    finalized = await _one(database, "SELECT * FROM billing_periods WHERE id = %s", live["id"])
    assert finalized["status"] == "finalized" and finalized["finalized_at"] == after

    # Late January usage no longer changes a finalized period; the open February one is kept current.
    await log.insert([_row(tenant, key.key_id, JAN_10, 500)])
    await log.insert([_row(tenant, key.key_id, JAN_10 + timedelta(days=31), 1)])
    await UsageRollup(UsageRollupStore(database)).run_once()
    await worker.run_once(after + timedelta(hours=1))
    assert (await _one(database, "SELECT cost_micros FROM billing_periods WHERE id = %s", live["id"]))["cost_micros"] == 42
    feb = await _one(database, "SELECT cost_micros FROM billing_periods WHERE id = %s", period_id(tenant, "live", date(2026, 2, 1)))
    assert feb["cost_micros"] == 10


async def test_billing_waits_for_pending_rollups_before_finalizing(database: Database, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, environment="live")
    log = RequestLogStore(database)
    await log.insert([_row(tenant, key.key_id, JAN_10, 40)])
    await UsageRollup(UsageRollupStore(database)).run_once()
    await log.insert([_row(tenant, key.key_id, JAN_10, 60)])  # marked, not rolled up yet
    worker = BillingWorker(BillingStore(database), finalize_delay=timedelta(0))
    [result] = await worker.run_once(datetime(2026, 3, 1, tzinfo=UTC))
    assert (result.status, result.cost_micros) == ("open", 40)
    await UsageRollup(UsageRollupStore(database)).run_once()
    [result] = await worker.run_once(datetime(2026, 3, 1, tzinfo=UTC))
    assert (result.status, result.cost_micros) == ("finalized", 100)
