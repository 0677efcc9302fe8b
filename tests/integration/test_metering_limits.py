"""Inbound rate limits against real Redis (and real Postgres policies): RPM,
TPM with reconciliation, requests per day, overrides, noisy-neighbour
tightening, the sliding window's edges, and failing open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.stack.processes import free_port
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.client import create_redis
from relay_server.storage.redis.limits import AdmitReply, RedisAdmission, WindowArg, noisy_key
from relay_server.storage.redis.wire import RedisWire
from tests.support.metering import MESSAGES, Harness, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await build_harness(database, redis_client, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    yield h
    await h.close()


def _override(owner_dsn: str, tenant: str, resource: str, limit: int, window: str, expires_at: datetime | None = None) -> None:
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            "INSERT INTO quota_overrides (id, tenant_id, resource, limit_value, time_window, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (new_id("qo"), tenant, resource, limit, window, expires_at),
        )


async def test_n_rpm_and_n_plus_k_requests_refuse_exactly_k(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, rate_limits={"rpm": 10})
    results = await asyncio.gather(*(harness.chat(key, max_tokens=5) for _ in range(13)))
    refused = [r for r in results if isinstance(r, RelayError)]
    assert len(refused) == 3
    err = refused[0]
    assert err.kind is ErrorKind.RATE_LIMIT_EXCEEDED and err.http_status == 429
    assert 1 <= err.retry_after_s <= 60
    assert err.details["limit"] == 10 and err.details["window"] == "per_minute" and err.details["scope"] == "key"
    assert err.details["reset_at"].endswith("Z") and err.details["upgrade_url"]
    assert err.headers["x-ratelimit-limit-requests"] == "10"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    # Refused requests are logged but do not use up the window.
    rows = await harness.rows(tenant)
    assert sorted(r["http_status"] for r in rows) == [200] * 10 + [429] * 3


async def test_successful_responses_carry_rate_limit_headers(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn, plan="free")  # 60 rpm, 40000 tpm
    key = make_key(pg_db.owner_dsn, tenant)
    remaining = []
    for _ in range(3):
        admitted = await harness.admit(key, {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5})
        headers = admitted.headers
        await harness.pipeline.complete(admitted)
        assert headers["x-ratelimit-limit-requests"] == "60" and headers["x-ratelimit-limit-tokens"] == "40000"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
    assert remaining == [59, 58, 57]


async def test_tpm_counts_the_estimate_first_and_the_real_total_after(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, rate_limits={"tpm": 100})
    first = await harness.chat(key, max_tokens=40)
    assert isinstance(first, dict)
    used = first["usage"]["total_tokens"]
    assert used > first["usage"]["prompt_tokens"]
    admitted = []
    for _ in range(5):
        result = await harness.chat(key, max_tokens=40)
        admitted.append(isinstance(result, dict))
    # Counting only input estimates would admit all of them; the reconciled totals admit what fits in 100.
    assert sum(admitted) + 1 == 100 // used
    assert admitted.index(False) == 100 // used - 1


async def test_a_request_larger_than_the_tpm_limit_is_refused_as_too_large(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, rate_limits={"tpm": 5})
    err = await harness.chat(key)
    assert isinstance(err, RelayError) and err.http_status == 429
    assert err.message.startswith("Request too large") and err.details["resource"] == "tpm"


async def test_requests_per_day_override_and_expired_overrides(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn, plan="free")
    _override(pg_db.owner_dsn, tenant, "requests_per_day", 2, "per_day")
    _override(pg_db.owner_dsn, tenant, "rpm", 1, "per_minute", datetime.now(UTC) - timedelta(hours=1))
    key = make_key(pg_db.owner_dsn, tenant)
    results = [await harness.chat(key, max_tokens=5) for _ in range(3)]
    assert [isinstance(r, dict) for r in results] == [True, True, False]  # the expired rpm=1 override is ignored
    err = results[2]
    assert err.details["window"] == "per_day" and err.details["limit"] == 2
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert err.details["reset_at"] == midnight.isoformat().replace("+00:00", "Z")
    assert err.retry_after_s == pytest.approx((midnight - datetime.now(UTC)).total_seconds(), abs=5)


async def test_unlimited_quota_means_no_limit(harness: Harness, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn, plan="free")
    _override(pg_db.owner_dsn, tenant, "rpm", -1, "per_minute")
    _override(pg_db.owner_dsn, tenant, "tpm", -1, "per_minute")
    key = make_key(pg_db.owner_dsn, tenant)
    admitted = await harness.admit(key, {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5})
    assert "x-ratelimit-limit-requests" not in admitted.headers
    await harness.pipeline.complete(admitted)


async def test_a_flagged_noisy_tenant_gets_half_its_limits(harness: Harness, redis_client: Redis, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    _override(pg_db.owner_dsn, tenant, "rpm", 8, "per_minute")
    key = make_key(pg_db.owner_dsn, tenant)
    await redis_client.set(noisy_key(tenant), "500", ex=60)
    results = [await harness.chat(key, max_tokens=5) for _ in range(6)]
    assert [isinstance(r, dict) for r in results] == [True] * 4 + [False] * 2
    assert results[-1].details["limit"] == 4


async def test_limits_fail_open_when_redis_is_unreachable(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    harness = await build_harness(database, dead, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    try:
        tenant = make_tenant(pg_db.owner_dsn)
        key = make_key(pg_db.owner_dsn, tenant, rate_limits={"rpm": 1})
        results = [await harness.chat(key, max_tokens=5) for _ in range(3)]
        assert all(isinstance(r, dict) for r in results)
        assert harness.metering.gate.stats.limits_failed_open == 3
    finally:
        await harness.close()
        await dead.aclose()


# --- the script itself, with explicit clocks ------------------------------------------


def _rpm(key: str, limit: int, cost: int = 1) -> WindowArg:
    return WindowArg(key, "m", limit, cost, scalable=True)


async def test_the_sliding_minute_frees_capacity_as_old_seconds_leave(redis_wire: RedisWire) -> None:
    script = RedisAdmission(redis_wire)
    key, noisy = "relay:{t}:rl:rpm", "relay:{t}:noisy"
    t0 = 1_700_000_000_000
    for i in range(3):  # three requests at t0, t0+10s, t0+20s
        reply = await script.admit(noisy=noisy, request_id=f"r{i}", now_ms=t0 + 10_000 * i, windows=[_rpm(key, 3)], caps=[])
        assert reply.status == AdmitReply.ADMITTED
    refused = await script.admit(noisy=noisy, request_id="r3", now_ms=t0 + 30_500, windows=[_rpm(key, 3)], caps=[])
    assert refused.status == AdmitReply.LIMITED
    _, effective, used, retry_ms, too_large = refused.values
    assert (effective, used, too_large) == (3, 3, 0)
    assert retry_ms == 29_500  # the t0 request leaves the window at t0 + 60 s
    just_before = await script.admit(noisy=noisy, request_id="r4", now_ms=t0 + 59_999, windows=[_rpm(key, 3)], caps=[])
    assert just_before.status == AdmitReply.LIMITED
    at_edge = await script.admit(noisy=noisy, request_id="r5", now_ms=t0 + 60_000, windows=[_rpm(key, 3)], caps=[])
    assert at_edge.status == AdmitReply.ADMITTED
    limit, remaining, reset_ms = at_edge.values
    assert (limit, remaining) == (3, 0) and reset_ms == 10_000  # the t0+10s request is now the oldest


async def test_nothing_is_recorded_when_any_window_refuses(redis_client: Redis, redis_wire: RedisWire) -> None:
    script = RedisAdmission(redis_wire)
    tenant_rpm, key_rpm = "relay:{t}:rl:rpm", "relay:{t}:rl:key:k:rpm"
    t0 = 1_700_000_000_000
    windows = [_rpm(tenant_rpm, 100), WindowArg(key_rpm, "m", 1, 1, scalable=False)]
    assert (await script.admit(noisy="relay:{t}:noisy", request_id="a", now_ms=t0, windows=windows, caps=[])).status == 0
    refused = await script.admit(noisy="relay:{t}:noisy", request_id="b", now_ms=t0 + 1, windows=windows, caps=[])
    assert refused.status == AdmitReply.LIMITED and refused.values[0] == 2
    assert await redis_client.hgetall(tenant_rpm) == {str(t0 // 1000).encode(): b"1"}
