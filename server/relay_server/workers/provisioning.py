"""The ``provision_tenant`` job: from signup to a usable tenant.

In one transaction: seed the system roles with their permissions, give the
owner its role, check the plan's quota definitions exist, create the first
key (a management key, from the hash signup put in the payload), and move
the tenant to ``trial`` through the lifecycle (which writes the audit row).  A failure leaves the tenant in
``provisioning`` with nothing half-done; the job is retried with back-off,
and the lifecycle sweep re-queues a tenant whose job died.

Payment-provider customer records are created by the billing capability
(its own job), so a tenant is usable without one.
"""

from __future__ import annotations

from relay_server.domain.keys import NewKey
from relay_server.storage.postgres import api_keys as key_store
from relay_server.storage.postgres import members
from relay_server.storage.postgres.jobs import Job
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.tenants import get_tenant
from relay_server.tenancy.calls import system_call
from relay_server.tenancy.lifecycle import Lifecycle
from relay_server.tenancy.policy_bus import PolicyBus
from relay_server.tenancy.rbac import SYSTEM_ROLES
from relay_server.workers.runner import PermanentJobError

FIRST_KEY_NAME = "Default key"


class Provisioner:
    def __init__(self, db: Database, lifecycle: Lifecycle, invalidator: PolicyBus) -> None:
        self._db = db
        self._lifecycle = lifecycle
        self._invalidator = invalidator

    async def run(self, job: Job) -> None:
        tenant_id = job.tenant_id
        if not tenant_id:
            raise PermanentJobError("provision_tenant needs a tenant_id")
        call = system_call(f"job_{job.id}")
        owner_id = job.payload.get("owner_user_id")
        first = job.payload.get("first_key") or None
        async with self._db.system_tx() as conn:
            tenant = await get_tenant(conn, tenant_id, lock=True)
            if tenant is None:
                raise PermanentJobError(f"tenant {tenant_id} does not exist")
            if tenant.status != "provisioning":
                return  # done by an earlier attempt
            quotas = await (await conn.execute("SELECT count(*) AS n FROM quota_definitions WHERE plan = %s", (tenant.plan,))).fetchone()
            if not quotas or not quotas["n"]:
                raise RuntimeError(f"plan {tenant.plan!r} has no quota definitions: limits would be undefined")
            await members.seed_roles(conn, tenant_id, SYSTEM_ROLES)
            if owner_id:
                await members.assign_role(conn, tenant_id, owner_id, "owner")
            key = None
            if first and await key_store.get_key(conn, tenant_id, first["id"]) is None:
                key = await key_store.insert_key(
                    conn,
                    key_id=first["id"],
                    tenant_id=tenant_id,
                    spec=NewKey(name=FIRST_KEY_NAME, environment=first["environment"], scope="management", created_by=owner_id),
                    key_hash=first["key_hash"],
                    key_prefix=first["key_prefix"],
                    key_hint=first["key_hint"],
                )
                await call.audit(
                    conn, tenant_id, "api_key.created", resource_type="api_key", resource_id=key.id,
                    metadata={"name": key.name, "key_hint": key.key_hint, "environment": key.environment, "scope": key.scope},
                )  # fmt: skip
            await self._lifecycle.apply(conn, tenant, "trial", call, reason="provisioning complete")
            staged = await self._invalidator.stage(conn, tenant_id, [("tenant", tenant_id)])
        if first:
            # A client that tried the key before it existed may have cached "unknown".
            await self._invalidator.keys_changed(tenant_id, [first["id"]], [first["key_hash"]])
        await self._lifecycle.after_commit(tenant_id, staged)
