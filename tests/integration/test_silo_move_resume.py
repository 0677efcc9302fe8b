"""The silo move's failure path, in process on the embedded Postgres: a final delta that does not
agree within the write pause lifts the pause, keeps replication and fails; running the move again
resumes from what exists and finishes.  The data plane then reads and writes the silo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from relay_server.storage.postgres.demo import seed_demo
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.silos import DataPlane
from relay_server.storage.postgres.usage import UsageQueries
from relay_server.tenancy.placement import PlacementReader
from relay_server.tenancy.silo_move import MoveConfig, MoveError, SiloMove
from tests.support.pg import PgCluster, TestDatabase


@pytest.fixture
def silo(pg_cluster: PgCluster) -> Iterator[TestDatabase]:
    db = pg_cluster.create_empty_database("relay_silo")
    yield db
    with psycopg.connect(db.superuser_dsn, autocommit=True) as conn:  # whatever a failed assertion left behind
        for (name,) in conn.execute("SELECT subname FROM pg_subscription").fetchall():
            conn.execute(f'ALTER SUBSCRIPTION "{name}" DISABLE')
            conn.execute(f'ALTER SUBSCRIPTION "{name}" SET (slot_name = NONE)')
            conn.execute(f'DROP SUBSCRIPTION "{name}"')
    pg_cluster.drop_database(db)


def _insert_requests(dsn: str, tenant_id: str, key_id: str, ids: list[str]) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        for rid in ids:
            conn.execute(
                """INSERT INTO requests (id, created_at, tenant_id, api_key_id, environment, request_type, started_at, status)
                   VALUES (%s, %s, %s, %s, 'test', 'chat', %s, 'success')""",
                (rid, now, tenant_id, key_id, now),
            )


def _config(pg_db: TestDatabase, tenant_id: str) -> dict[str, str]:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        return dict(conn.execute("SELECT key, value FROM tenant_config WHERE tenant_id = %s", (tenant_id,)).fetchall())


async def test_a_failed_final_delta_lifts_the_pause_and_running_again_resumes(pg_db: TestDatabase, silo: TestDatabase) -> None:
    tenant_id = json.loads(seed_demo(pg_db.owner_dsn))["tenant_id"]
    with psycopg.connect(pg_db.owner_dsn) as conn:
        key_id = conn.execute("SELECT id FROM api_keys WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]
    _insert_requests(pg_db.owner_dsn, tenant_id, key_id, [f"req_{i}" for i in range(20)])
    published: list[str] = []
    seen_paused: list[bool] = []

    async def diverge_then_publish(tid: str) -> None:
        # Called once the pause is committed: the silo gets a row the pool does not have, so the
        # final delta cannot agree.  The pause is visible in the configuration at this moment.
        if not published:
            seen_paused.append("write_paused_until" in _config(pg_db, tid))
            with psycopg.connect(silo.superuser_dsn) as conn:
                conn.execute(
                    """INSERT INTO requests (id, created_at, tenant_id, api_key_id, request_type, started_at, status)
                       VALUES ('req_stray', now(), %s, %s, 'chat', now(), 'success')""",
                    (tid, key_id),
                )
        published.append(tid)

    config = MoveConfig(
        tenant_id=tenant_id, silo="eu", pool_dsn=pg_db.owner_dsn, silo_dsn=silo.owner_dsn,
        publisher_dsn=pg_db.superuser_dsn, subscriber_dsn=silo.superuser_dsn, pause_s=0.5, settle_s=0.1,
        catchup_timeout_s=60,
    )  # fmt: skip
    with pytest.raises(MoveError, match="still differ"):
        await SiloMove(config, diverge_then_publish).run()
    assert seen_paused == [True]
    assert published == [tenant_id, tenant_id]  # the pause, then its release
    assert "write_paused_until" not in _config(pg_db, tenant_id) and "data_placement" not in _config(pg_db, tenant_id)
    with psycopg.connect(pg_db.owner_dsn) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE tenant_id = %s ORDER BY created_at, id", (tenant_id,))]
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'relay_silo_%'").fetchone() == (1,)
    assert {"tenant.silo_move_started", "tenant.write_paused", "tenant.write_resumed", "tenant.silo_move_failed"} <= set(actions)

    # Traffic meanwhile keeps flowing into the pool and replicating; the operator removes the stray row.
    _insert_requests(pg_db.owner_dsn, tenant_id, key_id, ["req_late"])
    with psycopg.connect(silo.superuser_dsn) as conn:
        conn.execute("DELETE FROM requests WHERE id = 'req_stray'")
    report = await SiloMove(config, lambda tid: _noop(published, tid)).run()
    assert report.sums["requests"].rows == 21
    assert _config(pg_db, tenant_id).get("data_placement") == "silo:eu"
    with psycopg.connect(pg_db.owner_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)

    # The data plane now reads the silo, through row-level security.
    pool = Database(pg_db.owner_dsn, pg_db.app_dsn, min_size=1, max_size=2)
    eu = Database(silo.owner_dsn, silo.app_dsn, min_size=1, max_size=2)
    async with pool, eu:
        plane = DataPlane(pool, {"eu": eu}, placement=PlacementReader(pool).silo)
        assert await plane.database_for(tenant_id) is eu
        _insert_requests(silo.owner_dsn, tenant_id, key_id, ["req_after"])
        rows = await UsageQueries(plane).requests(tenant_id, {}, None, None, None, 100)
        assert {r["id"] for r in rows} == {f"req_{i}" for i in range(20)} | {"req_late", "req_after"}
        assert await UsageQueries(plane).requests("ten_other", {}, None, None, None, 100) == []


async def _noop(published: list[str], tenant_id: str) -> None:
    published.append(tenant_id)
