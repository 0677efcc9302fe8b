"""Row-level security, end to end: as ``relay_app`` inside ``tenant_tx(A)``
every tenant-scoped table shows only A's rows and refuses rows of B.

Rows for two tenants are inserted as the owner first (plus Relay-owned and
platform rows with tenant_id NULL).  ``ROWS`` must name every table that has
a tenant column: a new table without an entry here fails the coverage test.

Fixtures ``pg_cluster`` and ``database`` come from tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Database, app_dsn_from_owner
from tests.support.pg import PgCluster, TestDatabase

A, B = "ten_a", "ten_b"
TODAY = date(2026, 1, 15)
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1"]
FEATURES = ["byok", "sso", "webhooks"]
RESOURCES = ["rpm", "tpm", "requests_per_day"]
PERMS = ["api_keys:read", "usage:read", "billing:read"]


RowFn = Callable[[str, int], dict[str, Any]]


def _at(n: int) -> datetime:
    return datetime(2026, 1, 15, 12, n)


# One valid row of each tenant-scoped table for tenant t.  n varies every
# unique column, so row n=1 fits next to the seeded n=0; references always
# point at tenant t's n=0 objects (usr_t_0, key_t_0, thr_t_0, ...).
ROWS: dict[str, RowFn] = {
    "tenants": lambda t, n: {
        "id": t if n == 0 else f"{t}_{n}", "slug": f"{t}-{n}".replace("_", "-"), "name": t, "status": "active",
    },
    "users": lambda t, n: {"id": f"usr_{t}_{n}", "tenant_id": t, "email": f"{n}@{t}.test"},
    "roles": lambda t, n: {"id": f"role_{t}_{n}", "tenant_id": t, "name": f"role{n}"},
    "role_permissions": lambda t, n: {"tenant_id": t, "role_id": f"role_{t}_0", "permission_id": PERMS[n]},
    "user_roles": lambda t, n: {
        "tenant_id": t, "user_id": f"usr_{t}_0", "role_id": f"role_{t}_0" if n == 0 else f"role_{t}_extra",
    },
    "audit_log": lambda t, n: {
        "id": f"al_{t}_{n}", "tenant_id": t, "actor_id": f"usr_{t}_0", "actor_type": "user", "action": "x.created",
    },
    "provider_credentials": lambda t, n: {
        "id": f"cred_{t}_{n}", "tenant_id": t, "provider_id": "openai", "key_encrypted": b"\x01",
        "key_nonce": b"\x02", "dek_wrapped": b"\x03", "master_key_id": "mk1", "key_hint": "abcd",
    },
    "api_keys": lambda t, n: {
        "id": f"key_{t}_{n}", "tenant_id": t, "name": "k", "key_prefix": "rly_live_",
        "key_hash": f"hash_{t}_{n}", "key_hint": "abcd", "created_by": f"usr_{t}_0",
        "parent_key_id": None if n == 0 else f"key_{t}_0",
    },
    "requests": lambda t, n: {
        "id": f"req_{t}_{n}", "created_at": _at(n), "tenant_id": t, "api_key_id": f"key_{t}_0",
        "model_id": "gpt-4o", "provider_id": "openai", "credential_id": f"cred_{t}_0", "request_type": "chat",
        "started_at": _at(n), "status": "success",
    },
    "usage_daily": lambda t, n: {
        "tenant_id": t, "date": TODAY - timedelta(days=n), "model_id": "gpt-4o", "api_key_id": f"key_{t}_0",
    },
    "usage_daily_model": lambda t, n: {
        "tenant_id": t, "environment": "live", "date": TODAY - timedelta(days=n), "model_id": "gpt-4o",
    },
    "usage_rollup_pending": lambda t, n: {"tenant_id": t, "date": TODAY - timedelta(days=n)},
    "request_archive_files": lambda t, n: {
        "partition_name": f"requests_y2025m0{n + 1}", "month": date(2025, n + 1, 1), "tenant_id": t,
        "path": f"requests/month=2025-0{n + 1}/tenant={t}/part-0.parquet", "row_count": 1, "bytes": 1,
        "checksum": "x", "file_sha256": "x", "state": "archived",
    },
    "billing_periods": lambda t, n: {
        "id": f"bp_{t}_{n}", "tenant_id": t,
        "period_start": date(2025, 12 - n, 1), "period_end": date(2025, 12 - n, 28),
    },
    "billing_line_items": lambda t, n: {
        "id": f"bli_{t}_{n}", "billing_period_id": f"bp_{t}_0", "tenant_id": t, "model_id": MODELS[n],
        "request_count": 1, "input_tokens": 1, "output_tokens": 1, "total_cost": 0,
    },
    "response_cache": lambda t, n: {
        "id": f"rc_{t}_{n}", "tenant_id": t, "cache_key": f"ck_{t}_{n}", "model_id": "gpt-4o", "request_hash": "h",
        "response_body": Jsonb({"ok": True}), "input_tokens": 1, "output_tokens": 1,
        "expires_at": datetime(2030, 1, 1),
    },
    "quota_overrides": lambda t, n: {
        "id": f"qo_{t}_{n}", "tenant_id": t, "resource": RESOURCES[n], "limit_value": 5, "time_window": "per_minute",
    },
    "tenant_feature_overrides": lambda t, n: {"tenant_id": t, "feature": FEATURES[n], "enabled": True},
    "tenant_config": lambda t, n: {"tenant_id": t, "key": f"k{n}", "value": "v"},
    "webhook_deliveries": lambda t, n: {
        "id": f"wh_{t}_{n}", "tenant_id": t, "event_id": f"ev_{t}_{n}", "event_type": "x", "url": "https://h.test/",
        "payload": Jsonb({}),
    },
    "virtual_models": lambda t, n: {
        "id": f"vm_{t}_{n}", "tenant_id": t, "name": f"fast{n}", "strategy": "priority", "targets": Jsonb([]),
    },
    "budget_routes": lambda t, n: {"id": f"br_{t}_{n}", "tenant_id": t, "alias": f"a{n}", "route_to": "b", "threshold_bp": 9000},
    "threads": lambda t, n: {"id": f"thr_{t}_{n}", "tenant_id": t, "end_user_id": "eu1", "api_key_id": f"key_{t}_0"},
    "thread_messages": lambda t, n: {
        "id": f"msg_{t}_{n}", "tenant_id": t, "thread_id": f"thr_{t}_0", "seq": n + 1, "role": "user",
        "idempotency_key": f"idem_{n}",
    },
    "responses": lambda t, n: {
        "id": f"resp_{t}_{n}", "tenant_id": t, "model": "gpt-4o-mini", "status": "completed", "body": "{}",
        "expires_at": "2999-01-01T00:00:00Z",
    },
    "response_input_items": lambda t, n: {
        "tenant_id": t, "response_id": f"resp_{t}_0", "position": n, "id": f"msg_{t}_{n}", "item": "{}",
    },
}
# Tables whose tenant column is not tenant_id.
TENANT_COLUMN = {"tenants": "id"}
# Tables where rows with a NULL tenant exist and what relay_app may see of them.
NULL_TENANT_VISIBLE = {"provider_credentials": True, "audit_log": False}


def _insert(conn: psycopg.Connection[Any] | Any, table: str, row: dict[str, Any]) -> Any:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    return conn.execute(query, list(row.values()))


def _seed(owner_dsn: str) -> None:
    with psycopg.connect(owner_dsn) as conn:
        for tenant in (A, B):
            for table, fn in ROWS.items():
                _insert(conn, table, fn(tenant, 0))
            # A second role, so a user_roles row n=1 has something to point at.
            _insert(conn, "roles", {"id": f"role_{tenant}_extra", "tenant_id": tenant, "name": "extra"})
        _insert(conn, "provider_credentials", {**ROWS["provider_credentials"]("relay", 0), "tenant_id": None})
        platform_event = {**ROWS["audit_log"]("platform", 0), "tenant_id": None, "actor_type": "platform_admin"}
        _insert(conn, "audit_log", platform_event)


@pytest.fixture(scope="module")
def seeded(pg_cluster: PgCluster) -> Iterator[TestDatabase]:
    """One database per module with rows for A, B and NULL; tests must not change it."""
    db = pg_cluster.create_database("relay_rls")
    _seed(db.owner_dsn)
    yield db
    pg_cluster.drop_database(db)


@pytest_asyncio.fixture
async def db(seeded: TestDatabase) -> Any:
    database = Database(seeded.owner_dsn, seeded.app_dsn, min_size=1, max_size=1)
    await database.open()
    yield database
    await database.close()


class _Rollback(Exception):
    """Raised to end a tenant_tx without committing."""


def _tenant_col(table: str) -> str:
    return TENANT_COLUMN.get(table, "tenant_id")


# --- catalogue-level checks ----------------------------------------------------


def _tenant_scoped_tables(conn: psycopg.Connection) -> dict[str, tuple[bool, bool, str]]:
    """Every table (parents and partitions) with a tenant column -> (rls, forced, kind)."""
    rows = conn.execute(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, c.relkind::text
        FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
        WHERE ns.nspname = 'public' AND c.relkind IN ('r', 'p')
          AND (c.relname = 'tenants' OR EXISTS (
                SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
        """
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_every_tenant_scoped_table_is_covered_and_has_rls_enabled_and_forced(seeded: TestDatabase) -> None:
    with psycopg.connect(seeded.owner_dsn) as conn:
        tables = _tenant_scoped_tables(conn)
        partitions = {r[0] for r in conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits")}
    assert set(tables) - partitions == set(ROWS), "a tenant-scoped table is missing from ROWS (or ROWS is stale)"
    assert {"requests_default"} <= partitions
    for name, (enabled, forced, _) in tables.items():
        assert enabled and forced, f"{name}: relrowsecurity={enabled} relforcerowsecurity={forced}"


def test_every_tenant_scoped_table_has_a_tenant_policy(seeded: TestDatabase) -> None:
    with psycopg.connect(seeded.owner_dsn) as conn:
        tables = _tenant_scoped_tables(conn)
        for name in tables:
            rows = conn.execute(
                "SELECT coalesce(qual, ''), with_check FROM pg_policies "
                "WHERE tablename = %s AND 'public' = ANY (roles)",
                (name,),
            ).fetchall()
            quals = [qual + " " + (check or "") for qual, check in rows]
            assert quals and all("current_setting('app.tenant_id'::text, true)" in q for q in quals), (name, quals)


def test_relay_app_cannot_write_global_tables_or_reach_partitions_directly(seeded: TestDatabase) -> None:
    with psycopg.connect(seeded.owner_dsn) as conn:
        tenant_tables = set(_tenant_scoped_tables(conn))
        rows = conn.execute(
            "SELECT c.relname, has_table_privilege('relay_app', c.oid, 'SELECT'), "
            "has_table_privilege('relay_app', c.oid, 'INSERT,UPDATE,DELETE') "
            "FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
            "WHERE ns.nspname = 'public' AND c.relkind IN ('r', 'p')"
        ).fetchall()
        partitions = {r[0] for r in conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits")}
    privileges = {name: (can_read, can_write) for name, can_read, can_write in rows}
    for name, (can_read, can_write) in privileges.items():
        if name in partitions:
            assert not can_read and not can_write, name
        elif name not in tenant_tables:
            assert not can_write, f"relay_app may write the global table {name}"
    assert privileges["models"] == (True, False)
    assert privileges["schema_migrations"] == (False, False)
    assert privileges["credential_rotation_checkpoints"] == (False, False)


# --- behaviour as relay_app ----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("table", sorted(ROWS))
async def test_tenant_sees_only_its_own_rows(db: Database, seeded: TestDatabase, table: str) -> None:
    col = _tenant_col(table)
    with psycopg.connect(seeded.owner_dsn) as owner:
        query = sql.SQL("SELECT {c}, count(*) FROM {t} GROUP BY {c}").format(
            c=sql.Identifier(col), t=sql.Identifier(table)
        )
        counts = dict(owner.execute(query).fetchall())
    assert counts.get(A, 0) >= 1 and counts.get(B, 0) >= 1, "seed is missing rows: the test would prove nothing"
    null_visible = NULL_TENANT_VISIBLE.get(table, False)
    async with db.tenant_tx(A) as conn:
        rows = await (await conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))).fetchall()
    seen = [r[col] for r in rows]
    assert set(seen) <= ({A, None} if null_visible else {A})
    assert seen.count(A) == counts[A]
    assert seen.count(None) == (counts.get(None, 0) if null_visible else 0)


@pytest.mark.asyncio
@pytest.mark.parametrize("table", sorted(ROWS))
async def test_tenant_cannot_insert_rows_of_another_tenant(db: Database, table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
        async with db.tenant_tx(A) as conn:
            await _insert(conn, table, ROWS[table](B, 1))
    if table in ("tenants", "request_archive_files"):
        assert "permission denied" in str(denied.value)  # no INSERT grant at all (only the archiver writes it)
        return
    assert "row-level security" in str(denied.value)
    # Control: the same shape of row for its own tenant is accepted.
    with pytest.raises(_Rollback):
        async with db.tenant_tx(A) as conn:
            await _insert(conn, table, ROWS[table](A, 1))
            raise _Rollback


@pytest.mark.asyncio
async def test_updates_and_deletes_touch_only_own_rows(db: Database, seeded: TestDatabase) -> None:
    with pytest.raises(_Rollback):
        async with db.tenant_tx(A) as conn:
            updated = await conn.execute("UPDATE api_keys SET name = 'renamed'")
            assert updated.rowcount == 1
            deleted = await conn.execute("DELETE FROM tenant_config WHERE tenant_id = %s", (B,))
            assert deleted.rowcount == 0
            raise _Rollback
    # Moving an own row to another tenant is refused by WITH CHECK.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        async with db.tenant_tx(A) as conn:
            await conn.execute("UPDATE tenant_config SET tenant_id = %s", (B,))


@pytest.mark.asyncio
async def test_relay_owned_credentials_are_readable_not_writable(db: Database) -> None:
    with pytest.raises(_Rollback):
        async with db.tenant_tx(A) as conn:
            cur = await conn.execute("UPDATE provider_credentials SET priority = 1 WHERE tenant_id IS NULL")
            assert cur.rowcount == 0
            cur = await conn.execute("DELETE FROM provider_credentials WHERE tenant_id IS NULL")
            assert cur.rowcount == 0
            raise _Rollback
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        async with db.tenant_tx(A) as conn:
            await _insert(conn, "provider_credentials", {**ROWS["provider_credentials"]("x", 5), "tenant_id": None})


@pytest.mark.asyncio
async def test_audit_log_is_append_only_for_the_app(db: Database) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        async with db.tenant_tx(A) as conn:
            await conn.execute("DELETE FROM audit_log")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        async with db.tenant_tx(A) as conn:
            await conn.execute("UPDATE audit_log SET action = 'nothing.happened'")


@pytest.mark.asyncio
async def test_tenant_may_rename_itself_but_not_change_its_status(db: Database) -> None:
    with pytest.raises(_Rollback):
        async with db.tenant_tx(A) as conn:
            cur = await conn.execute("UPDATE tenants SET name = 'Acme'")
            assert cur.rowcount == 1
            raise _Rollback
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        async with db.tenant_tx(A) as conn:
            await conn.execute("UPDATE tenants SET status = 'active', plan = 'enterprise'")


@pytest.mark.asyncio
async def test_no_tenant_set_means_no_rows_and_the_setting_does_not_leak(db: Database) -> None:
    async with db.tenant_tx(A) as conn:
        assert len(await (await conn.execute("SELECT id FROM api_keys")).fetchall()) == 1
    # The pool has one connection: it is the same one, after the transaction.
    async with db.app.connection() as conn, conn.transaction():
        setting = await (await conn.execute("SELECT current_setting('app.tenant_id', true) AS v")).fetchone()
        assert setting is not None and setting["v"] in ("", None)
        assert await (await conn.execute("SELECT id FROM api_keys")).fetchall() == []
        assert await (await conn.execute("SELECT id FROM requests")).fetchall() == []


@pytest.mark.asyncio
async def test_relay_app_cannot_read_a_partition_by_name(db: Database) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        async with db.tenant_tx(A) as conn:
            await conn.execute("SELECT * FROM requests_default")


@pytest.mark.asyncio
async def test_system_tx_sees_every_tenant(db: Database) -> None:
    async with db.system_tx() as conn:
        rows = await (await conn.execute("SELECT DISTINCT tenant_id FROM api_keys ORDER BY 1")).fetchall()
    assert [r["tenant_id"] for r in rows] == [A, B]


@pytest.mark.asyncio
async def test_tenant_tx_rejects_missing_tenant(db: Database) -> None:
    for bad in ("", None):
        with pytest.raises(ValueError):
            async with db.tenant_tx(bad):  # type: ignore[arg-type]
                pass


@pytest.mark.asyncio
async def test_tenant_tx_rolls_back_on_error(db: Database, seeded: TestDatabase) -> None:
    with pytest.raises(RuntimeError):
        async with db.tenant_tx(A) as conn:
            await conn.execute("UPDATE tenant_config SET value = 'changed'")
            raise RuntimeError("boom")
    async with db.tenant_tx(A) as conn:
        row = await (await conn.execute("SELECT value FROM tenant_config")).fetchone()
    assert row == {"value": "v"}


def test_database_refuses_an_app_dsn_with_the_owner_role(seeded: TestDatabase) -> None:
    with pytest.raises(ValueError, match="different role"):
        Database(seeded.owner_dsn, seeded.owner_dsn)


def test_app_dsn_is_derived_from_the_owner_dsn() -> None:
    dsn = app_dsn_from_owner("postgresql://relay_owner:pw@127.0.0.1:5432/relay", "apppw")
    assert "user=relay_app" in dsn and "password=apppw" in dsn and "dbname=relay" in dsn and "port=5432" in dsn
    # Without a password the owner's is kept (the make-up convention).
    assert "password=pw" in app_dsn_from_owner("postgresql://relay_owner:pw@127.0.0.1:5432/relay")
