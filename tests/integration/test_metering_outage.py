"""Outages during load: Postgres stops — inference continues, rows go to the
spool and reach the request log exactly once when it returns; Redis stops —
requests keep flowing (limits fail open) and limits resume when it is back.

Each test runs its own server (a dedicated embedded Postgres, a dedicated
Redis) so it can stop and restart it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay_server.app.metering import spool_dir
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.stack.processes import free_port
from relay_server.stack.redis import start_redis
from relay_server.storage.postgres.embedded import start_embedded_postgres
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.client import create_redis
from relay_server.storage.spool import Spool
from tests.support.metering import MESSAGES, Harness, Key, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import PgCluster, start_cluster

pytestmark = pytest.mark.asyncio


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[PgCluster]:
    cluster = start_cluster(tmp_path / "pgcluster")
    yield cluster
    cluster.stop()


async def _request(harness: Harness, key: Key, request_id: str) -> bool:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 8}
    try:
        admitted = await harness.pipeline.admit("chat", body, key.metadata, request_id)
        await harness.pipeline.complete(admitted)
    except RelayError:
        return False
    return True


async def _load(harness: Harness, key: Key, n: int, ids: list[str]) -> list[bool]:
    batch = [new_request_id() for _ in range(n)]
    ids += batch
    results: list[bool] = []
    for start in range(0, n, 10):
        results += await asyncio.gather(*(_request(harness, key, rid) for rid in batch[start : start + 10]))
    return results


async def test_postgres_down_mid_load_loses_no_row_and_duplicates_none(
    own_cluster: PgCluster, redis_client, tmp_path: Path  # noqa: ANN001
) -> None:
    pg = own_cluster.create_database()
    db = Database(pg.owner_dsn, pg.app_dsn, min_size=1, max_size=4)
    await db.open()
    settings = settings_for(pg.owner_dsn, pg.app_dsn, tmp_path / "state")
    harness = await build_harness(db, redis_client, settings)
    try:
        tenant = make_tenant(pg.owner_dsn)
        key = make_key(pg.owner_dsn, tenant, cap_micros=10_000_000, cap_window="monthly")
        ids: list[str] = []
        assert all(await _load(harness, key, 60, ids))
        await harness.metering.writer.flush()

        own_cluster.server.stop()
        during = await _load(harness, key, 80, ids)
        await harness.metering.writer.flush()
        assert all(during), "inference must continue while Postgres is down"
        assert harness.metering.writer.spooled > 0 and not harness.metering.writer.healthy
        assert Spool(spool_dir(settings)).pending()

        start_embedded_postgres(own_cluster.server.data_dir, port=own_cluster.server.port, durable=False)
        assert all(await _load(harness, key, 60, ids))
        for _ in range(100):  # the replay loop probes every 0.2 s
            await harness.metering.writer.flush()
            if harness.metering.writer.healthy and not Spool(spool_dir(settings)).pending():
                break
            await asyncio.sleep(0.1)

        async with db.system_tx() as conn:
            rows = await (await conn.execute("SELECT id FROM requests WHERE tenant_id = %s", (tenant,))).fetchall()
            marks = await (await conn.execute("SELECT count(*) AS n FROM usage_rollup_pending WHERE tenant_id = %s", (tenant,))).fetchone()  # noqa: E501
        logged = [r["id"] for r in rows]
        assert len(logged) == len(set(logged)) == 200
        assert set(logged) == set(ids)
        assert marks["n"] >= 1  # the replayed rows left their rollup marks too
        assert harness.metering.writer.replayed > 0
    finally:
        await harness.close()
        await db.close()


async def test_redis_down_keeps_requests_flowing_and_limits_resume_when_it_returns(
    database: Database, pg_db, tmp_path: Path  # noqa: ANN001
) -> None:
    port = free_port()
    server = start_redis(tmp_path / "redis", port)
    redis = create_redis(server.url)
    harness = await build_harness(database, redis, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path / "state"))
    try:
        tenant = make_tenant(pg_db.owner_dsn)
        key = make_key(pg_db.owner_dsn, tenant, rate_limits={"rpm": 5})
        ids: list[str] = []
        assert sorted(await _load(harness, key, 7, ids)) == [False] * 2 + [True] * 5

        server.stop()
        assert all(await _load(harness, key, 20, ids)), "requests must flow while Redis is down"
        assert harness.metering.gate.stats.limits_failed_open >= 20

        server = start_redis(tmp_path / "redis", port)
        results: list[bool] = []
        for _ in range(50):  # the client reconnects on its own
            results = [await _request(harness, key, new_request_id()) for _ in range(7)]
            if False in results:
                break
            await asyncio.sleep(0.1)
        assert results.count(False) >= 2, "limits must be enforced again"
        assert sorted(await _load(harness, key, 3, ids)) == [False] * 3
    finally:
        await harness.close()
        await redis.aclose()
        server.stop()
