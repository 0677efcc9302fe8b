"""A tenant moves from the pool to a silo while its traffic continues.

A whole Relay (2 workers, Redis) on the embedded Postgres with a silo database
configured; two tenants send chat completions without pause while
``relay tenants move-to-silo`` runs as its own process (logical replication,
the write pause, verification, the switch).  Afterwards: every request the
clients saw succeed is logged exactly once, the moved tenant's new rows land
in the silo only, the other tenant never left the pool, the usage API reads
the silo, row-level security holds in the silo, and nothing of the
replication is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from openai import AsyncOpenAI

from relay_server.stack.redis import RedisHandle
from tests.e2e.admin_helpers import rest, wait_for
from tests.support.pg import PgCluster, TestDatabase
from tests.support.stack import REPO, RelayStack, start_stack

pytestmark = pytest.mark.e2e

SILO = "eu"


@pytest.fixture(scope="module")
def silo_db(pg_cluster: PgCluster) -> Iterator[TestDatabase]:
    db = pg_cluster.create_empty_database("relay_silo")  # the move applies the migrations itself
    yield db
    pg_cluster.drop_database(db)


@pytest.fixture(scope="module")
def stack(
    pg_cluster: PgCluster, silo_db: TestDatabase, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    relay = start_stack(
        db, Path(tmp_path_factory.mktemp("relay-silo")), redis_url=redis_server.url, workers=2,
        extra_env={"RELAY_SILO_DATABASES": f"{SILO}={silo_db.owner_dsn}", "RELAY_JOBS_POLL_S": "0.2",
                   "RELAY_ROLLUP_INTERVAL_S": "0.5", "RELAY_BILLING_INTERVAL_S": "0.5",
                   "RELAY_LIFECYCLE_SWEEP_S": "0.5", "RELAY_DELETION_RETENTION_DAYS": "0"},
    )  # fmt: skip
    yield relay
    relay.stop()
    # A failed move may leave replication behind; the database cannot be dropped under a subscription.
    with psycopg.connect(silo_db.superuser_dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT subname FROM pg_subscription").fetchall():
            conn.execute(f'ALTER SUBSCRIPTION "{name}" DISABLE')
            conn.execute(f'ALTER SUBSCRIPTION "{name}" SET (slot_name = NONE)')
            conn.execute(f'DROP SUBSCRIPTION "{name}"')
    with psycopg.connect(db.superuser_dsn, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall():
            wait_for(lambda s=slot: _drop_slot(conn, s), "slot released", timeout=10)
    pg_cluster.drop_database(db)


def _drop_slot(conn: psycopg.Connection[Any], slot: str) -> bool:
    try:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    except psycopg.errors.ObjectInUse:
        return False
    return True


def _signup(stack: RelayStack, admin: httpx.Client, slug: str) -> tuple[str, str]:
    r = admin.post("/v1/tenants", json={"slug": slug, "name": slug.title(), "owner_email": f"owner@{slug}.test"})
    assert r.status_code == 200, r.text
    body = r.json()
    tid = body["tenant"]["id"]
    wait_for(lambda: admin.get(f"/v1/tenants/{tid}").json()["tenant"]["status"] == "TENANT_STATUS_TRIAL", "trial")
    with psycopg.connect(stack.db.owner_dsn) as conn:  # the traffic here is not about rate limits
        for resource, window in (("rpm", "per_minute"), ("tpm", "per_minute"), ("requests_per_day", "per_day")):
            conn.execute(
                "INSERT INTO quota_overrides (id, tenant_id, resource, limit_value, time_window) VALUES (%s, %s, %s, -1, %s)",
                (f"qo_{tid}_{resource}", tid, resource, window),
            )
    return tid, body["first_api_key_secret"]


class Traffic:
    """One tenant's client: chat completions back to back; the ids of those that succeeded."""

    def __init__(self, stack: RelayStack, key: str) -> None:
        # Retries as the SDK does by default, a little more patient: a 503 tenant_moving asks to come back.
        hooks = {"response": [self._count_pause]}
        self.client = AsyncOpenAI(
            base_url=stack.base_url, api_key=key, max_retries=8, timeout=30,
            http_client=httpx.AsyncClient(event_hooks=hooks, timeout=30),
        )  # fmt: skip
        self.ids: list[str] = []
        self.moving: int = 0  # 503 tenant_moving answers seen (the SDK retried them)
        self.stop = asyncio.Event()

    async def _count_pause(self, response: httpx.Response) -> None:
        if response.status_code == 503:
            await response.aread()
            assert response.json()["error"]["code"] == "tenant_moving"
            assert response.headers["retry-after"] == "1"
            self.moving += 1

    async def one(self) -> str:
        raw = await self.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello silo"}]
        )
        request_id = raw.headers["x-request-id"]
        self.ids.append(request_id)
        return request_id

    async def run(self, concurrency: int = 3) -> None:
        async def loop() -> None:
            while not self.stop.is_set():
                await self.one()

        await asyncio.gather(*(loop() for _ in range(concurrency)))


def _rows(dsn: str, tenant_id: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, count(*) FROM requests WHERE tenant_id = %s AND status = 'success' GROUP BY id", (tenant_id,)
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _config(dsn: str, tenant_id: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT key, value FROM tenant_config WHERE tenant_id = %s", (tenant_id,)).fetchall())


async def _move(stack: RelayStack, silo_db: TestDatabase, tenant_id: str, *extra: str) -> tuple[int, str, str]:
    env = {
        **os.environ, **stack.server_env(),
        "RELAY_SILO_DATABASES": f"{SILO}={silo_db.owner_dsn}",
        # The embedded superuser replicates: it has REPLICATION and row-level security does not confine it.
        "RELAY_SILO_PUBLISHER_URL": stack.db.superuser_dsn, "RELAY_SILO_SUBSCRIBER_URL": silo_db.superuser_dsn,
    }  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_server", "tenants", "move-to-silo", tenant_id, "--silo", SILO, "--json",
        "--catchup-timeout", "60", *extra,
        env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_a_tenant_moves_to_its_silo_under_traffic_and_every_request_is_logged_once(
    stack: RelayStack, silo_db: TestDatabase
) -> None:
    with rest(stack, stack.admin_token) as admin:
        moving, moving_key = _signup(stack, admin, "silo-moving")
        staying, staying_key = _signup(stack, admin, "silo-staying")
    mover, stayer = Traffic(stack, moving_key), Traffic(stack, staying_key)
    for _ in range(5):  # rows to copy before replication starts
        await mover.one()
        await stayer.one()
    wait_for(lambda: len(_rows(stack.db.owner_dsn, moving)) >= 5, "first rows written")

    # The pause lasts as long as the final delta takes: tens of milliseconds when the silo has caught
    # up.  Eight clients back to back keep a request arriving every few milliseconds, so one meets it.
    traffic = asyncio.gather(mover.run(concurrency=8), stayer.run())
    try:
        t0 = time.monotonic()
        code, out, err = await _move(stack, silo_db, moving)
        move_s = time.monotonic() - t0
        before_after = len(mover.ids)
        # Traffic continues after the switch; these requests must land in the silo.
        deadline = time.monotonic() + 30
        while len(mover.ids) < before_after + 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        mover.stop.set()
        stayer.stop.set()
        await asyncio.wait_for(traffic, timeout=60)
    assert code == 0, f"move failed ({move_s:.1f} s): {err[-3000:]}"
    report = json.loads(out)
    print(f"move took {move_s:.1f} s, write pause {report['pause_s']} s, {mover.moving} answers were 503 tenant_moving")
    assert report["silo"] == SILO and report["pause_s"] < 6.0
    assert report["tables"]["requests"]["rows"] >= 5
    assert len(mover.ids) >= before_after + 10, "the moved tenant's traffic did not continue"
    assert mover.moving >= 1, "no request met the write pause"
    assert stayer.moving == 0, "the other tenant was paused"
    after_switch = mover.ids[before_after:]

    # Every request a client saw succeed is logged exactly once: the moved tenant's in the silo
    # (the pool's rows were replicated before the switch), the other's in the pool only.
    def silo_has_all() -> bool:
        return set(_rows(silo_db.owner_dsn, moving)) >= set(mover.ids)

    wait_for(silo_has_all, "every request of the moved tenant in the silo", timeout=30)
    wait_for(lambda: set(_rows(stack.db.owner_dsn, staying)) >= set(stayer.ids), "the other tenant's rows", timeout=30)
    silo_rows, pool_rows = _rows(silo_db.owner_dsn, moving), _rows(stack.db.owner_dsn, moving)
    assert set(silo_rows) == set(mover.ids) and all(n == 1 for n in silo_rows.values())
    assert len(mover.ids) == len(set(mover.ids))
    assert set(pool_rows) <= set(silo_rows), "a pool row of the moved tenant never reached the silo"
    assert not set(after_switch) & set(pool_rows), "a request after the switch was written to the pool"
    staying_rows = _rows(stack.db.owner_dsn, staying)
    assert set(staying_rows) == set(stayer.ids) and all(n == 1 for n in staying_rows.values())
    assert not _rows(silo_db.owner_dsn, staying), "the other tenant's rows reached the silo"

    # Placement switched and the pause is gone; the move is audited; replication is cleaned up.
    config = _config(stack.db.owner_dsn, moving)
    assert config.get("data_placement") == f"silo:{SILO}" and "write_paused_until" not in config
    with psycopg.connect(stack.db.owner_dsn) as conn:
        actions = [
            r[0]
            for r in conn.execute("SELECT action FROM audit_log WHERE tenant_id = %s ORDER BY created_at", (moving,))
        ]
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
    for action in (
        "tenant.silo_move_started",
        "tenant.write_paused",
        "tenant.placement_changed",
        "tenant.silo_move_finished",
    ):
        assert action in actions
    with psycopg.connect(silo_db.superuser_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_subscription").fetchone() == (0,)

    # Reads go to the silo: the request log API lists the new rows, and the usage rollup runs there.
    ids: set[str] = set()
    with rest(stack, stack.admin_token) as client:
        token = ""
        for _ in range(100):
            listed = client.get("/v1/requests", params={"tenant_id": moving, "page_size": 100, "page_token": token})
            assert listed.status_code == 200, listed.text
            ids |= {r["id"] for r in listed.json().get("requests", [])}
            token = listed.json().get("next_page_token", "")
            if not token:
                break
    assert ids >= set(mover.ids)
    with psycopg.connect(silo_db.owner_dsn) as conn:
        wait_for(
            lambda: conn.execute("SELECT coalesce(sum(request_count), 0) FROM usage_daily WHERE tenant_id = %s",
                                 (moving,)).fetchone()[0] == len(mover.ids) and conn.commit() is None,
            "usage rolled up in the silo", timeout=30,
        )  # fmt: skip

    # Billing runs there too, and the billing API reads it.
    def billed() -> int:
        r = httpx.get(f"{stack.base_url}/billing/periods", params={"tenant_id": moving},
                      headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        return sum(int(li["request_count"]) for p in r.json().get("billing_periods", []) for li in p.get("line_items", []))

    wait_for(lambda: billed() == len(mover.ids), "the silo's billing period through the API", timeout=30)

    # Row-level security holds in the silo: relay_app sees only the tenant it names.
    with psycopg.connect(silo_db.app_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (staying,))
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (moving,))
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == len(mover.ids)


async def test_moving_again_is_a_no_op_and_unknown_silos_or_tenants_are_refused(
    stack: RelayStack, silo_db: TestDatabase
) -> None:
    with rest(stack, stack.admin_token) as admin:
        tenant, key = _signup(stack, admin, "silo-again")
    client = Traffic(stack, key)
    await client.one()
    wait_for(lambda: len(_rows(stack.db.owner_dsn, tenant)) == 1, "row written")
    code, out, err = await _move(stack, silo_db, tenant, "--purge-pool")
    assert code == 0, err[-3000:]
    assert json.loads(out)["purged_pool"] is True
    assert not _rows(stack.db.owner_dsn, tenant) and len(_rows(silo_db.owner_dsn, tenant)) == 1
    code, out, err = await _move(stack, silo_db, tenant)  # resumable: finishes, changes nothing
    assert code == 0, err[-3000:]
    assert len(_rows(silo_db.owner_dsn, tenant)) == 1
    await client.one()
    wait_for(lambda: len(_rows(silo_db.owner_dsn, tenant)) == 2, "a new request in the silo")

    # A hard deletion erases the tenant's rows in its silo too.
    with rest(stack, stack.admin_token) as admin:
        for status in ("TENANT_STATUS_ACTIVE", "TENANT_STATUS_DELETED"):
            admin.post(f"/v1/tenants/{tenant}:transition", json={"status": status, "reason": "e2e"}).raise_for_status()
    wait_for(lambda: not _rows(silo_db.owner_dsn, tenant), "the silo's rows hard-deleted", timeout=30)
    with psycopg.connect(stack.db.owner_dsn) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM tenants WHERE id = %s", (tenant,)).fetchone() == (0,)
                 and conn.commit() is None, "the tenant hard-deleted", timeout=30)  # fmt: skip
        audit = conn.execute(
            "SELECT metadata FROM audit_log WHERE action = 'tenant.hard_deleted' AND resource_id = %s", (tenant,)
        ).fetchone()
    assert audit is not None and audit[0]["rows"].get("requests") == 2

    code, _, err = await _move(stack, silo_db, "ten_does_not_exist")
    assert code == 1 and "does not exist" in err
    env_silo = silo_db
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_server", "tenants", "move-to-silo", tenant, "--silo", "nowhere",
        env={**os.environ, **stack.server_env(), "RELAY_SILO_DATABASES": f"{SILO}={env_silo.owner_dsn}"},
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_b = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1 and "not in RELAY_SILO_DATABASES" in err_b.decode()
