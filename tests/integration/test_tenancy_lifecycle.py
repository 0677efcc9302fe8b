"""The lifecycle state machine against Postgres: legal moves, refused moves
that change nothing, the timed jobs (trial expiry, grace deletion, hard
deletion of every row), and what API keys see at each step."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres import jobs
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.lifecycle import TRANSITIONS
from relay_server.tenancy.rbac import AdminPrincipal
from tests.integration.test_rls import ROWS, TENANT_COLUMN, _insert
from tests.support.pg import TestDatabase
from tests.support.tenancy import operator, signup, tenancy_for


def _md(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _status_and_audit(db: Database, tenant_id: str) -> tuple[str, int]:
    async with db.system_tx() as conn:
        status = await (await conn.execute("SELECT status FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
        audits = await (await conn.execute("SELECT count(*) AS n FROM audit_log WHERE tenant_id = %s", (tenant_id,))).fetchone()
    return status["status"], audits["n"]


@pytest.mark.asyncio
async def test_the_whole_legal_path_and_what_keys_see(database: Database, redis_client: Redis, redis_server: RedisHandle) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        s = await signup(t, "path")
        tid, auth = s.tenant.id, t.authenticator
        assert (await auth.authenticate(_md(s.first_key_secret))).tenant_id == tid  # cached now
        await t.tenants.transition(operator(), tid, "active", "card added")
        await t.tenants.transition(operator(), tid, "suspended", "payment failed")
        # The cached record said "active": the transition purged it, so this request sees 402 at once.
        with pytest.raises(RelayError) as suspended:
            await auth.authenticate(_md(s.first_key_secret))
        assert suspended.value.http_status == 402 and "billing" in suspended.value.message
        await t.tenants.transition(operator(), tid, "active", "payment resolved")
        assert (await auth.authenticate(_md(s.first_key_secret))).tenant_id == tid
        deleted = await t.tenants.transition(operator(), tid, "deleted", "user cancelled")
        assert deleted.deleted_at is not None and deleted.status == "deleted"
        with pytest.raises(RelayError) as gone:
            await auth.authenticate(_md(s.first_key_secret))
        assert gone.value.http_status == 401
        async with database.system_tx() as conn:
            rows = await (await conn.execute(
                "SELECT metadata->>'from' AS f, metadata->>'to' AS t, actor_type, host(ip_address) AS ip FROM audit_log "
                "WHERE tenant_id = %s AND action = 'tenant.status_changed' ORDER BY created_at", (tid,))).fetchall()  # fmt: skip
        assert [(r["f"], r["t"]) for r in rows] == [
            ("provisioning", "trial"), ("trial", "active"), ("active", "suspended"), ("suspended", "active"), ("active", "deleted"),
        ]  # fmt: skip
        assert rows[0]["actor_type"] == "system" and rows[1]["actor_type"] == "platform_admin" and rows[1]["ip"] == "203.0.113.7"


ILLEGAL = [(a, b) for a in TRANSITIONS for b in TRANSITIONS if b not in TRANSITIONS[a] and a not in ("provisioning", "deleted")]


@pytest.mark.asyncio
async def test_every_illegal_transition_is_a_409_that_changes_nothing(database: Database) -> None:
    paths = {"trial": [], "active": ["active"], "suspended": ["active", "suspended"], "expired": ["expired"]}
    async with tenancy_for(database, None) as t:
        for i, (source, target) in enumerate(ILLEGAL):
            s = await signup(t, f"ill{i}")
            for step in paths[source]:
                await t.tenants.transition(operator(), s.tenant.id, step, "")
            before = await _status_and_audit(database, s.tenant.id)
            with pytest.raises(RelayError) as info:
                await t.tenants.transition(operator(), s.tenant.id, target, "")
            assert info.value.kind is ErrorKind.FAILED_PRECONDITION and info.value.code == "invalid_status_transition", (source, target)
            assert await _status_and_audit(database, s.tenant.id) == before


@pytest.mark.asyncio
async def test_deleted_is_final_and_unknown_tenants_and_statuses_are_precise_errors(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "final")
        await t.tenants.transition(operator(), s.tenant.id, "active", "")
        await t.tenants.transition(operator(), s.tenant.id, "deleted", "")
        for target in ("active", "trial", "suspended", "deleted"):
            with pytest.raises(RelayError) as info:
                await t.tenants.transition(operator(), s.tenant.id, target, "")
            assert info.value.kind is ErrorKind.FAILED_PRECONDITION
        with pytest.raises(RelayError) as unknown:
            await t.tenants.transition(operator(), "ten_nope", "active", "")
        assert unknown.value.kind is ErrorKind.NOT_FOUND
        with pytest.raises(RelayError) as bad:
            await t.tenants.transition(operator(), s.tenant.id, "frozen", "")
        assert bad.value.kind is ErrorKind.BAD_REQUEST


@pytest.mark.asyncio
async def test_a_retried_transition_with_the_same_request_id_succeeds_once(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "retry")
        first = await t.tenants.transition(operator(idempotency_key="t-1"), s.tenant.id, "active", "")
        again = await t.tenants.transition(operator(idempotency_key="t-1"), s.tenant.id, "active", "")
        assert first.status == again.status == "active"
        with pytest.raises(RelayError):  # without the request id it is a real (illegal) second transition
            await t.tenants.transition(operator(), s.tenant.id, "active", "")


@pytest.mark.asyncio
async def test_tenant_users_may_only_cancel(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "selfserve")
        await t.tenants.transition(operator(), s.tenant.id, "active", "")
        admin = Call(AdminPrincipal("user", "usr_x", s.tenant.id, frozenset({"settings:read", "settings:update"})), "req_1")
        owner = Call(AdminPrincipal("user", s.owner_user_id, s.tenant.id, frozenset({"settings:delete"})), "req_2")
        with pytest.raises(RelayError) as info:
            await t.tenants.transition(owner, s.tenant.id, "suspended", "")
        assert info.value.kind is ErrorKind.PERMISSION_DENIED
        with pytest.raises(RelayError) as info:
            await t.tenants.transition(admin, s.tenant.id, "deleted", "")
        assert info.value.kind is ErrorKind.PERMISSION_DENIED
        assert (await t.tenants.transition(owner, s.tenant.id, "deleted", "bye")).status == "deleted"


@pytest.mark.asyncio
async def test_trial_expiry_and_grace_deletion_run_as_jobs_and_respect_the_current_state(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        ending, converted, suspended = [await signup(t, n) for n in ("ending", "converted", "susp")]
        async with database.system_tx() as conn:
            await conn.execute("UPDATE tenants SET trial_ends_at = now() - interval '1 minute' WHERE id = ANY(%s)",
                               ([ending.tenant.id, converted.tenant.id],))  # fmt: skip
        await t.tenants.transition(operator(), suspended.tenant.id, "active", "")
        await t.tenants.transition(operator(), suspended.tenant.id, "suspended", "")
        counts = await t.lifecycle_jobs.sweep()
        assert counts.get("expire_trial") == 2 and "grace_delete" not in counts
        # The trial converts while its expiry job waits in the queue.
        await t.tenants.transition(operator(), converted.tenant.id, "active", "")
        await t.runner.drain()
        assert (await t.tenants.get(operator(), ending.tenant.id)).status == "expired"
        assert (await t.tenants.get(operator(), converted.tenant.id)).status == "active"
        with pytest.raises(RelayError) as expired:
            await t.authenticator.authenticate(_md(ending.first_key_secret))
        assert expired.value.http_status == 402

        async with database.system_tx() as conn:
            await conn.execute("UPDATE tenants SET status_changed_at = now() - interval '31 days' WHERE id = ANY(%s)",
                               ([ending.tenant.id, suspended.tenant.id],))  # fmt: skip
        assert (await t.lifecycle_jobs.sweep()).get("grace_delete") == 2
        await t.runner.drain()
        for s in (ending, suspended):
            assert (await t.tenants.get(operator(), s.tenant.id)).status == "deleted"


def _seed_every_table(owner_dsn: str, tenants: list[str]) -> None:
    with psycopg.connect(owner_dsn) as conn:
        for tenant in tenants:
            for table, fn in ROWS.items():
                row = fn(tenant, 0)
                if table == "tenants":
                    conn.execute("UPDATE tenants SET status = 'deleted', deleted_at = now() - interval '31 days', "
                                 "status_changed_at = now() - interval '31 days' WHERE id = %s", (tenant,))  # fmt: skip
                    continue
                _insert(conn, table, row)
            _insert(conn, "roles", {"id": f"role_{tenant}_extra", "tenant_id": tenant, "name": "extra"})
            conn.execute("INSERT INTO provider_health_events (id, provider_id, credential_id, status) VALUES (%s, 'openai', %s, 'degraded')",
                         (f"phe_{tenant}", f"cred_{tenant}_0"))  # fmt: skip


@pytest.mark.asyncio
async def test_hard_delete_removes_every_row_of_the_tenant_in_every_table(database: Database, pg_db: TestDatabase) -> None:
    async with tenancy_for(database, None) as t:
        doomed = (await signup(t, "doomed")).tenant.id
        kept = (await signup(t, "kept")).tenant.id
        _seed_every_table(pg_db.owner_dsn, [doomed])
        async with database.system_tx() as conn:  # a job of the tenant still waiting in the queue
            await jobs.enqueue(conn, "auth_purge", tenant_id=doomed, delay=timedelta(hours=1))
        assert (await t.lifecycle_jobs.sweep()).get("hard_delete") == 1
        await t.runner.drain()
        with psycopg.connect(pg_db.owner_dsn) as conn:
            left = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE args ->> 'tenant_id' = %s", (doomed,)).fetchone()
            assert left[0] == 0
        with psycopg.connect(pg_db.owner_dsn) as conn:
            for table in ROWS:
                col = TENANT_COLUMN.get(table, "tenant_id")
                n = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(col)),
                                 (doomed,)).fetchone()[0]  # fmt: skip
                assert n == 0, table
            assert conn.execute("SELECT count(*) FROM provider_health_events").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM users WHERE tenant_id = %s", (kept,)).fetchone()[0] == 1
            platform = conn.execute(
                "SELECT actor_type, metadata FROM audit_log WHERE tenant_id IS NULL AND action = 'tenant.hard_deleted' AND resource_id = %s",
                (doomed,),
            ).fetchone()
        assert platform is not None and platform[0] == "system" and platform[1]["rows"]["api_keys"] >= 2


@pytest.mark.asyncio
async def test_hard_delete_waits_for_the_retention_period(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "recent")
        await t.tenants.transition(operator(), s.tenant.id, "active", "")
        await t.tenants.transition(operator(), s.tenant.id, "deleted", "")
        assert "hard_delete" not in await t.lifecycle_jobs.sweep()
        # Even a job queued early (by hand) does nothing before the period ends.
        async with database.system_tx() as conn:
            await jobs.enqueue(conn, "hard_delete", payload={"tenant_id": s.tenant.id})
        await t.runner.drain()
        assert (await t.tenants.get(operator(), s.tenant.id)).status == "deleted"


@pytest.mark.asyncio
async def test_trial_days_come_from_settings(database: Database) -> None:
    async with tenancy_for(database, None, trial_days=3) as t:
        s = await signup(t, "short")
        tenant = await t.tenants.get(operator(), s.tenant.id)
        assert tenant.trial_ends_at - tenant.status_changed_at == timedelta(days=3)
