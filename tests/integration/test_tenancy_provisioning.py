"""Signup → provisioning worker → trial, on real Postgres: the job queue
(SKIP LOCKED, retries with back-off, the stuck-tenant monitor), what the
worker seeds, and signup's bad inputs."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres import jobs
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.rbac import SYSTEM_ROLES
from relay_server.tenancy.tenants import SignupRequest
from relay_server.workers.runner import BackgroundRunner
from tests.support.tenancy import JOBS, operator, signup, tenancy_for


def _md(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _one(db: Database, query: str, *params):
    async with db.system_tx() as conn:
        return await (await conn.execute(query, params)).fetchone()


async def _count(db: Database, query: str, *params) -> int:
    row = await _one(db, query, *params)
    return int(next(iter(row.values())))


@pytest.mark.asyncio
async def test_signup_returns_at_once_and_the_worker_finishes_the_job(
    database: Database, redis_client: Redis, redis_server: RedisHandle
) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        s = await signup(t, "acme", provision=False)
        assert s.tenant.status == "provisioning" and s.first_key_secret.startswith("rly_test_sk_")
        owner = await _one(database, "SELECT role, status FROM users WHERE id = %s", s.owner_user_id)
        assert owner == {"role": "owner", "status": "active"}
        # Before provisioning the key does not exist: only its hash is in the job.
        with pytest.raises(RelayError) as before:
            await t.authenticator.authenticate(_md(s.first_key_secret))
        assert before.value.http_status == 401
        job = await _one(database, f"SELECT kind, status, payload FROM {JOBS} WHERE tenant_id = %s", s.tenant.id)
        assert job["kind"] == "provision_tenant" and job["status"] == "queued"
        assert s.first_key_secret not in str(job["payload"])

        assert await t.runner.drain() == 1
        tenant = await t.tenants.get(operator(), s.tenant.id)
        assert tenant.status == "trial"
        assert timedelta(days=13, hours=23) < tenant.trial_ends_at - datetime.now(UTC) <= timedelta(days=14)
        # The negative answer cached before provisioning was purged with it.
        principal = await t.authenticator.authenticate(_md(s.first_key_secret))
        assert (principal.tenant_id, principal.key_id, principal.scope) == (s.tenant.id, s.first_key_id, "management")

        async with database.system_tx() as conn:
            roles = await (await conn.execute(
                "SELECT r.name, count(rp.permission_id) AS n FROM roles r LEFT JOIN role_permissions rp ON rp.role_id = r.id "
                "WHERE r.tenant_id = %s GROUP BY r.name", (s.tenant.id,))).fetchall()  # fmt: skip
            owner_role = await (await conn.execute(
                "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = %s", (s.owner_user_id,)
            )).fetchall()  # fmt: skip
            actions = [r["action"] for r in await (await conn.execute(
                "SELECT action FROM audit_log WHERE tenant_id = %s ORDER BY created_at, action", (s.tenant.id,))).fetchall()]  # fmt: skip
        assert {r["name"]: r["n"] for r in roles} == {name: len(perms) for name, perms in SYSTEM_ROLES.items()}
        assert [r["name"] for r in owner_role] == ["owner"]
        assert sorted(actions) == ["api_key.created", "tenant.created", "tenant.status_changed"]
        # Succeeded jobs leave the queue.
        assert await _one(database, f"SELECT status FROM {JOBS} WHERE tenant_id = %s AND kind = 'provision_tenant'", s.tenant.id) is None


@pytest.mark.asyncio
async def test_a_failing_job_is_retried_with_backoff_and_then_succeeds(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "retry", provision=False, plan="starter")
        # Break provisioning: the plan has no quota definitions.
        async with database.system_tx() as conn:
            saved = await (await conn.execute("DELETE FROM quota_definitions WHERE plan = 'starter' RETURNING *")).fetchall()
        with caplog.at_level(logging.WARNING, logger="relay_server.workers.job_app"):
            assert await t.runner.drain() == 1
        job = await _one(database, f"SELECT id, status, attempts, scheduled_at > now() AS later FROM {JOBS} WHERE tenant_id = %s", s.tenant.id)
        assert job["status"] == "queued" and job["attempts"] == 1 and job["later"]
        failed = [r for r in caplog.records if r.getMessage() == "job failed"]
        assert len(failed) == 1 and "quota" in failed[0].error and failed[0].status == "retrying" and failed[0].attempts == 1
        assert (await t.tenants.get(operator(), s.tenant.id)).status == "provisioning"
        assert await t.runner.drain() == 0  # backing off: not due yet

        async with database.system_tx() as conn:
            for q in saved:
                await conn.execute(
                    "INSERT INTO quota_definitions (plan, resource, limit_value, time_window) VALUES (%s, %s, %s, %s)",
                    (q["plan"], q["resource"], q["limit_value"], q["time_window"]),
                )
            await conn.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = %s", (job["id"],))
        assert await t.runner.drain() == 1
        assert await _one(database, f"SELECT id FROM {JOBS} WHERE tenant_id = %s", s.tenant.id) is None
        assert (await t.tenants.get(operator(), s.tenant.id)).status == "trial"


@pytest.mark.asyncio
async def test_out_of_attempts_the_job_fails_and_the_monitor_requeues_the_stuck_tenant(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "stuck", provision=False)
        async with database.system_tx() as conn:
            # As if every attempt had failed long ago.
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'failed', attempts = 10 WHERE args ->> 'tenant_id' = %s", (s.tenant.id,)
            )
            await conn.execute("UPDATE tenants SET status_changed_at = now() - interval '6 minutes' WHERE id = %s", (s.tenant.id,))
        counts = await t.lifecycle_jobs.sweep()
        assert counts.get("provision_tenant") == 1
        assert (await t.lifecycle_jobs.sweep()).get("provision_tenant") is None  # dedupe: queued once
        assert await t.runner.drain() == 1
        assert (await t.tenants.get(operator(), s.tenant.id)).status == "trial"
        # The re-queued job carried the original payload: the first key works.
        principal = await t.authenticator.authenticate(_md(s.first_key_secret))
        assert principal.key_id == s.first_key_id


@pytest.mark.asyncio
async def test_a_tenant_provisioning_for_less_than_five_minutes_is_left_alone(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "young", provision=False)
        async with database.system_tx() as conn:
            await conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE args ->> 'tenant_id' = %s", (s.tenant.id,))
        assert "provision_tenant" not in await t.lifecycle_jobs.sweep()


@pytest.mark.asyncio
async def test_concurrent_runners_run_each_job_exactly_once(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        signups = [await signup(t, f"busy{i}", provision=False) for i in range(6)]
        handlers = {"provision_tenant": t.runner._kinds["provision_tenant"].handler}
        runners = [BackgroundRunner(database, handlers, worker_name=f"w{i}") for i in range(3)]
        ran = await asyncio.gather(*(r.drain() for r in runners))
        assert sum(ran) == 6
        assert await _count(database, "SELECT count(*) FROM procrastinate_jobs") == 0  # each succeeded, and left
        for s in signups:
            assert (await t.tenants.get(operator(), s.tenant.id)).status == "trial"


@pytest.mark.asyncio
async def test_an_abandoned_running_job_is_requeued_after_its_lease(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "lease", provision=False)
        async with database.system_tx() as conn:
            # A worker took the job, then died: its heartbeat stopped ten minutes ago.
            dead = await (await conn.execute(
                "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '10 minutes') RETURNING id")).fetchone()
            await conn.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s", (dead["id"],))
        assert await t.runner.drain() == 0  # still "running" under the dead worker
        assert (await t.lifecycle_jobs.sweep())["requeued_leases"] == 1
        assert await t.runner.drain() == 1
        assert (await t.tenants.get(operator(), s.tenant.id)).status == "trial"


@pytest.mark.asyncio
async def test_signup_with_a_request_id_is_idempotent(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        request = SignupRequest(slug="idem", name="Idem", owner_email="o@idem.test")
        first = await t.tenants.create(operator(idempotency_key="signup-1"), request)
        again = await t.tenants.create(operator(idempotency_key="signup-1"), request)
        assert (again.tenant.id, again.owner_user_id, again.first_key_id) == (first.tenant.id, first.owner_user_id, first.first_key_id)
        assert first.first_key_secret and again.first_key_secret == ""  # a secret is shown once
        assert await _count(database, "SELECT count(*) FROM tenants WHERE slug = 'idem'") == 1
        assert await _count(database, "SELECT count(*) FROM procrastinate_jobs") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fields", "kind", "param"),
    [
        ({"slug": "Bad Slug"}, ErrorKind.BAD_REQUEST, "slug"),
        ({"name": " "}, ErrorKind.BAD_REQUEST, "name"),
        ({"owner_email": "not-an-email"}, ErrorKind.BAD_REQUEST, "owner_email"),
        ({"plan": "platinum"}, ErrorKind.BAD_REQUEST, "plan"),
        ({"first_key_environment": "staging"}, ErrorKind.BAD_REQUEST, "first_key_environment"),
        ({"metadata": {"k" * 65: "v"}}, ErrorKind.BAD_REQUEST, "metadata"),
        ({"slug": "taken"}, ErrorKind.CONFLICT, "slug"),
    ],
)
async def test_bad_signups_are_refused_and_change_nothing(database: Database, fields: dict, kind: ErrorKind, param: str) -> None:
    async with tenancy_for(database, None) as t:
        await signup(t, "taken", provision=False)
        before = [await _count(database, f"SELECT count(*) FROM {table}") for table in ("tenants", "users", "procrastinate_jobs", "audit_log")]
        request = SignupRequest(**{"slug": "fresh", "name": "Fresh", "owner_email": "o@fresh.test", **fields})
        with pytest.raises(RelayError) as info:
            await t.tenants.create(operator(), request)
        assert (info.value.kind, info.value.param) == (kind, param)
        after = [await _count(database, f"SELECT count(*) FROM {table}") for table in ("tenants", "users", "procrastinate_jobs", "audit_log")]
        assert after == before


@pytest.mark.asyncio
async def test_other_capabilities_can_register_job_kinds(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        seen: list[dict] = []

        async def handler(job: jobs.Job) -> None:
            seen.append(job.payload)

        t.runner.add_handler("example_job", handler)
        with pytest.raises(ValueError):
            t.runner.add_handler("example_job", handler)
        async with database.system_tx() as conn:
            await jobs.enqueue(conn, "example_job", payload={"n": 1})
            await jobs.enqueue(conn, "nobody_handles_this", payload={"n": 2})
        assert await t.runner.drain() == 1 and seen == [{"n": 1}]
        async with database.system_tx() as conn:
            left = await (await conn.execute(f"SELECT kind, status FROM {JOBS} WHERE kind = 'nobody_handles_this'")).fetchone()
        assert left == {"kind": "nobody_handles_this", "status": "queued"}  # left for whoever handles it
