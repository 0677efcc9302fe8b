"""Timed lifecycle work: the sweep that finds what is due, and the jobs it queues.

The sweep (every ``lifecycle_sweep_s`` in every server process, one at a
time through an advisory lock) queues, each with a dedupe key so repeated
sweeps never double-queue:

* ``expire_trial``   trial past ``trial_ends_at``               → expired
* ``grace_delete``   suspended / expired longer than their grace → deleted
* ``hard_delete``    deleted longer than the retention period    → every row removed
* ``provision_tenant`` again for tenants stuck in provisioning with no live job

and also re-queues jobs whose worker died (no heartbeat for ``job_lease``),
and marks keys past their expiry.
The jobs re-check the tenant when they run: one that moved on meanwhile (a
trial that converted) is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from relay_server.storage.postgres import jobs
from relay_server.storage.postgres import tenants as store
from relay_server.storage.postgres.api_keys import expire_due_keys
from relay_server.storage.postgres.archive import ARCHIVE_LOCK
from relay_server.storage.postgres.audit import AuditEntry, insert_audit
from relay_server.storage.postgres.jobs import Job
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.purge import hard_delete_tenant
from relay_server.storage.postgres.silos import DataPlane
from relay_server.tenancy.calls import system_call
from relay_server.tenancy.lifecycle import Lifecycle
from relay_server.tenancy.tenants import PROVISION_JOB
from relay_server.workers.runner import PermanentJobError

log = logging.getLogger(__name__)

_SWEEP_LOCK = 0x52454C4159  # "RELAY": one sweep at a time across processes


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LifecycleJobs:
    def __init__(
        self,
        db: Database,
        lifecycle: Lifecycle,
        *,
        suspended_grace: timedelta,
        expired_grace: timedelta,
        retention: timedelta,
        provisioning_stuck: timedelta,
        job_lease: timedelta = timedelta(minutes=5),
        archive: Any = None,
        plane: DataPlane | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db = db
        self._plane = plane or DataPlane(db)
        self._lifecycle = lifecycle
        self._grace = {"suspended": suspended_grace, "expired": expired_grace}
        self._retention = retention
        self._stuck = provisioning_stuck
        self._lease = job_lease
        self._now = now
        # The request archive (storage/archive/files.py): a hard delete erases the tenant's files too.
        self.archive = archive

    def handlers(self) -> dict[str, Callable[[Job], object]]:
        return {"expire_trial": self.expire_trial, "grace_delete": self.grace_delete, "hard_delete": self.hard_delete}

    async def sweep(self) -> dict[str, int]:
        """Queue what is due; returns counts per kind (empty if another process holds the sweep)."""
        now = self._now()
        counts: dict[str, int] = {}

        def count(kind: str, job_id: int | None) -> None:
            if job_id is not None:
                counts[kind] = counts.get(kind, 0) + 1

        async with self._db.system_tx() as conn:
            locked = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (_SWEEP_LOCK,))).fetchone()
            if not locked or not locked["ok"]:
                return counts
            for tid in await store.trials_ended(conn, now):
                count("expire_trial", await jobs.enqueue(conn, "expire_trial", tenant_id=tid, dedupe_key=f"expire_trial:{tid}"))
            for status, grace in self._grace.items():
                for tid in await store.in_status_since(conn, status, now - grace):
                    count("grace_delete", await jobs.enqueue(conn, "grace_delete", tenant_id=tid, dedupe_key=f"grace_delete:{tid}"))
            for tid in await store.in_status_since(conn, "deleted", now - self._retention):
                # tenant_id NULL: the job outlives the tenant's rows it deletes.
                count("hard_delete", await jobs.enqueue(conn, "hard_delete", payload={"tenant_id": tid}, dedupe_key=f"hard_delete:{tid}"))
            for tid in await store.stuck_provisioning(conn, now - self._stuck):
                last = await jobs.latest(conn, PROVISION_JOB, tid)
                job_id = await jobs.enqueue(conn, PROVISION_JOB, tenant_id=tid, payload=last.payload if last else {}, dedupe_key=f"provision:{tid}")
                log.warning("tenant stuck in provisioning: job re-queued", extra={"tenant_id": tid, "last_status": last.status if last else None})
                count("provision_tenant", job_id)
            counts["requeued_leases"] = await jobs.retry_stalled(conn, self._lease)
            counts["expired_keys"] = await expire_due_keys(conn, now)
        return counts

    async def expire_trial(self, job: Job) -> None:
        assert job.tenant_id is not None
        now = self._now()
        await self._lifecycle.transition(
            job.tenant_id, "expired", system_call(f"job_{job.id}"), reason="trial ended",
            only_from={"trial"}, unless=lambda t: t.trial_ends_at is None or t.trial_ends_at > now,
        )  # fmt: skip

    async def grace_delete(self, job: Job) -> None:
        assert job.tenant_id is not None
        now = self._now()
        await self._lifecycle.transition(
            job.tenant_id, "deleted", system_call(f"job_{job.id}"), reason="grace period over",
            only_from=set(self._grace), unless=lambda t: t.status_changed_at > now - self._grace[t.status],
        )  # fmt: skip

    async def _delete_in_silo(self, tenant_id: str) -> dict[str, int]:
        """A tenant placed in a silo: its rows there first (committed before the pool's, so a retry
        still finds the placement and the tenant row that lead to them)."""
        silo = await self._plane.database_for(tenant_id)
        if silo is self._db:
            return {}
        async with silo.system_tx() as conn:
            return await hard_delete_tenant(conn, tenant_id)

    async def hard_delete(self, job: Job) -> None:
        tenant_id = job.payload.get("tenant_id")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise PermanentJobError("hard_delete needs payload.tenant_id")
        async with self._db.system_tx() as conn:
            tenant = await store.get_tenant(conn, tenant_id, lock=True)
            if tenant is None:
                return  # already gone
            if tenant.status != "deleted" or tenant.deleted_at is None or tenant.deleted_at > self._now() - self._retention:
                return  # not due (or restored by an operator fixing data by hand)
            files_removed = 0
            if self.archive is not None:
                # Waits for a running archiver, which could otherwise write this tenant's file again;
                # files go before rows, so a crash in between leaves the rows for the retry to find.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ARCHIVE_LOCK,))
                files_removed = await asyncio.to_thread(self.archive.erase_tenant, tenant_id)
            counts = await self._delete_in_silo(tenant_id)
            for table, n in (await hard_delete_tenant(conn, tenant_id)).items():
                counts[table] = counts.get(table, 0) + n
            await insert_audit(
                conn,
                AuditEntry(
                    tenant_id=None, actor_id="system", actor_type="system", action="tenant.hard_deleted",
                    resource_type="tenant", resource_id=tenant_id, request_id=f"job_{job.id}",
                    metadata={"rows": {k: v for k, v in counts.items() if v}, "archived_files": files_removed},
                ),
            )  # fmt: skip
        log.info("tenant hard-deleted", extra={"tenant_id": tenant_id, "rows": sum(counts.values())})
