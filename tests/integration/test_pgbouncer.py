"""Relay's Postgres pools through PgBouncer: the app role in transaction mode, the owner in session mode.

Transaction pooling hands one server connection to many clients, a transaction at a time.  Tenant
scoping must still hold: ``tenant_tx``'s setting is transaction-local and no prepared statement is
left behind, so whatever the server connection served before, a transaction sees exactly its own
tenant's rows — and a transaction that set no tenant sees none.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio

from relay_server.stack.pgbouncer import PgBouncerHandle, pgbouncer_available, start_pgbouncer
from relay_server.stack.processes import free_port
from relay_server.storage.postgres.migrate import APP_ROLE
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.request_log import RequestLogStore, RequestRow
from tests.support.metering import make_key, make_tenant
from tests.support.pg import OWNER_ROLE, PgCluster, TestDatabase

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not pgbouncer_available(), reason="Debian's pgbouncer is not installed (make pgbouncer)"),
]

SERVER_CONNECTIONS = 3  # far fewer than the clients: server connections are shared constantly


@pytest.fixture
def bouncer(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[PgBouncerHandle]:
    server = pg_cluster.server
    handle = start_pgbouncer(
        tmp_path / "pgbouncer", free_port(), upstream_host=server.host, upstream_port=server.port,
        users={APP_ROLE: pg_cluster.app_password, OWNER_ROLE: pg_cluster.owner_password}, pool_size=SERVER_CONNECTIONS,
    )  # fmt: skip
    yield handle
    handle.stop()


@pytest_asyncio.fixture
async def pooled_db(bouncer: PgBouncerHandle, pg_cluster: PgCluster, pg_db: TestDatabase) -> AsyncIterator[Database]:
    db = Database(
        bouncer.dsn(pg_db.name, OWNER_ROLE, pg_cluster.owner_password),
        bouncer.dsn(pg_db.name, APP_ROLE, pg_cluster.app_password),
        min_size=2, max_size=30, transaction_pooling=True,
    )  # fmt: skip
    await db.open()
    yield db
    await db.close()


async def test_tenant_scoping_holds_when_transactions_share_server_connections(
    pooled_db: Database, pg_db: TestDatabase
) -> None:
    tenants = [make_tenant(pg_db.owner_dsn) for _ in range(6)]
    keys = {t: {make_key(pg_db.owner_dsn, t) for _ in range(3)} for t in tenants}
    expected = {}
    with psycopg.connect(pg_db.owner_dsn) as conn:
        for t in tenants:
            rows = conn.execute("SELECT id FROM api_keys WHERE tenant_id = %s", (t,)).fetchall()
            expected[t] = {r[0] for r in rows}
            assert len(expected[t]) == len(keys[t])
    backends: set[int] = set()
    leaks: list[str] = []
    order = itertools.cycle(tenants)

    async def scoped(tenant: str) -> None:
        async with pooled_db.tenant_tx(tenant) as conn:
            # The same statement again and again: psycopg would prepare it after a few runs
            # and a later transaction on another server connection would not find it.
            for _ in range(3):
                rows = await (await conn.execute("SELECT id, tenant_id FROM api_keys ORDER BY id")).fetchall()
            setting = await (await conn.execute("SELECT current_setting('app.tenant_id', true) AS t, pg_backend_pid() AS pid")).fetchone()
            assert setting is not None
            backends.add(setting["pid"])
            if setting["t"] != tenant or {r["id"] for r in rows} != expected[tenant]:
                leaks.append(f"{tenant}: setting {setting['t']!r}, rows of {sorted({r['tenant_id'] for r in rows})}")

    async def unscoped() -> None:
        # The app pool without tenant_tx: whatever the server connection served before, nothing shows.
        async with pooled_db.app.connection() as conn, conn.transaction():
            seen = await (await conn.execute("SELECT count(*) AS n, current_setting('app.tenant_id', true) AS t FROM api_keys")).fetchone()
            assert seen is not None
            if seen["n"] != 0 or seen["t"] not in (None, ""):
                leaks.append(f"unscoped transaction saw {seen['n']} rows, tenant {seen['t']!r}")

    jobs = [scoped(next(order)) if i % 5 else unscoped() for i in range(400)]
    await asyncio.wait_for(asyncio.gather(*jobs), 90)
    assert leaks == []
    assert 1 < len(backends) <= SERVER_CONNECTIONS  # the transactions really shared a few server connections


async def test_the_owner_role_keeps_its_session(pooled_db: Database) -> None:
    """Session mode for the owner: a session advisory lock (the archiver's, the rotation job's) holds across transactions."""
    async with pooled_db.system.connection() as conn:
        first = await (await conn.execute("SELECT pg_backend_pid() AS pid, pg_try_advisory_lock(4242) AS ok")).fetchone()
        for _ in range(5):
            async with conn.transaction():
                again = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
                assert again is not None and first is not None and again["pid"] == first["pid"]
        assert first is not None and first["ok"]
        await conn.execute("SELECT pg_advisory_unlock(4242)")


async def test_the_request_log_writes_through_transaction_pooling(
    pg_cluster: PgCluster, pg_db: TestDatabase, tmp_path: Path
) -> None:
    """The request-log writer's batch statement leaves nothing on the session: with the owner role in
    transaction mode too, concurrent batches (more than psycopg's prepare threshold) on a few shared
    server connections all land, repeated rows once, with their marks."""
    server = pg_cluster.server
    handle = start_pgbouncer(
        tmp_path / "pgbouncer-tx", free_port(), upstream_host=server.host, upstream_port=server.port,
        users={APP_ROLE: pg_cluster.app_password, OWNER_ROLE: pg_cluster.owner_password}, pool_size=2,
        transaction_roles=(APP_ROLE, OWNER_ROLE),
    )  # fmt: skip
    try:
        db = Database(
            handle.dsn(pg_db.name, OWNER_ROLE, pg_cluster.owner_password),
            handle.dsn(pg_db.name, APP_ROLE, pg_cluster.app_password),
            min_size=2, max_size=8, transaction_pooling=True,
        )  # fmt: skip
        await db.open()
        try:
            tenant = make_tenant(pg_db.owner_dsn)
            key = make_key(pg_db.owner_dsn, tenant).key_id
            store = RequestLogStore(db)
            now = datetime.now(UTC)
            rows = [
                RequestRow(
                    id=f"req_pgb{i:04d}", created_at=now, tenant_id=tenant, api_key_id=key, environment="live",
                    request_type="chat", stream=False, started_at=now, status="success", cost_micros=i,
                    input_cost=Decimal("0.00000150"), request_metadata={"i": i},
                )
                for i in range(120)
            ]
            batches = [rows[i : i + 10] for i in range(0, len(rows), 10)]
            await asyncio.wait_for(asyncio.gather(*(store.insert(b) for b in batches + batches)), 60)
            async with db.system_tx() as conn:
                got = await (
                    await conn.execute(
                        "SELECT count(*) AS n, sum(cost_micros) AS micros, sum(input_cost) AS cost"
                        " FROM requests WHERE tenant_id = %s", (tenant,),
                    )
                ).fetchone()  # fmt: skip
                marks = await (
                    await conn.execute("SELECT count(*) AS n FROM usage_rollup_pending WHERE tenant_id = %s", (tenant,))
                ).fetchone()
            assert got == {"n": 120, "micros": sum(range(120)), "cost": Decimal("0.00018000")}
            assert marks == {"n": 1}
        finally:
            await db.close()
    finally:
        handle.stop()
