"""Tenant administration: signup, read, list, update, status changes.

Signup does the minimum synchronously — the tenant row (``provisioning``),
its owner user and a ``provision_tenant`` job, in one transaction — and
returns at once; the provisioning worker does the rest.  The first key's
secret is generated here so that it can be shown once in the signup
response, but only its hash travels in the job: the worker creates the key
row when the tenant is fully set up, so the key starts working exactly when
the tenant reaches ``trial``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.errors import UniqueViolation

from relay_server.domain.keys import mint_key
from relay_server.domain.policy import PLANS
from relay_server.domain.tenants import TenantRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.storage.postgres import jobs
from relay_server.storage.postgres import members as member_store
from relay_server.storage.postgres import tenants as store
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.lifecycle import Lifecycle
from relay_server.tenancy.policy_bus import PolicyBus

PROVISION_JOB = "provision_tenant"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class SignupRequest:
    slug: str
    name: str
    owner_email: str
    plan: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    first_key_environment: str = ""  # "" → test


@dataclass(frozen=True, slots=True)
class Signup:
    tenant: TenantRow
    owner_user_id: str
    first_key_id: str
    first_key_secret: str  # "" when a retried request returns the earlier signup


def _bad(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def validate_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > 50 or any(not k or len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        raise _bad("metadata", "metadata holds at most 50 entries, keys 1-64 and values up to 512 characters.")
    return dict(metadata)


def _not_found(tenant_id: str) -> RelayError:
    return RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")


class TenantAdmin:
    def __init__(
        self,
        db: Database,
        lifecycle: Lifecycle,
        invalidator: PolicyBus,
        *,
        wake_jobs: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._lifecycle = lifecycle
        self._invalidator = invalidator
        self._wake = wake_jobs

    async def create(self, call: Call, request: SignupRequest) -> Signup:
        call.principal.require_platform("create tenants")
        slug, name, email = request.slug.strip(), request.name.strip(), request.owner_email.strip().lower()
        if not _SLUG.match(slug):
            raise _bad("slug", "slug must be 1-63 characters of a-z, 0-9, _ and -, starting with a letter or digit.")
        if not name or len(name) > 200:
            raise _bad("name", "name must be 1 to 200 characters.")
        if not EMAIL_PATTERN.match(email):
            raise _bad("owner_email", "owner_email must be an email address.")
        plan = request.plan.strip() or "free"
        if plan not in PLANS:
            raise _bad("plan", f"plan must be one of {', '.join(PLANS)}.")
        environment = request.first_key_environment or "test"
        if environment not in ("live", "test"):
            raise _bad("first_key_environment", "first_key_environment must be live or test.")
        metadata = validate_metadata(request.metadata)

        minted = mint_key(environment)
        tenant_id, owner_id, key_id = new_id("ten"), new_id("usr"), new_id("key")
        try:
            async with self._db.system_tx() as conn:
                replay = await call.replay_of(conn, "tenant.created", None)
                if replay is not None and replay.resource_id:
                    tenant = await store.get_tenant(conn, replay.resource_id)
                    if tenant is not None:
                        meta = replay.metadata
                        return Signup(tenant, str(meta.get("owner_user_id", "")), str(meta.get("first_api_key_id", "")), "")
                tenant = await store.insert_tenant(
                    conn, tenant_id=tenant_id, slug=slug, name=name, plan=plan, metadata=metadata
                )
                await member_store.insert_user(conn, tenant_id=tenant_id, email=email, name=None, role="owner", user_id=owner_id)
                payload = {
                    "owner_user_id": owner_id,
                    "first_key": {
                        "id": key_id, "key_hash": minted.key_hash, "key_prefix": minted.key_prefix,
                        "key_hint": minted.key_hint, "environment": environment,
                    },
                }  # fmt: skip
                await jobs.enqueue(conn, PROVISION_JOB, tenant_id=tenant_id, payload=payload, dedupe_key=f"provision:{tenant_id}")
                await call.audit(
                    conn, tenant_id, "tenant.created", resource_type="tenant", resource_id=tenant_id,
                    metadata={"slug": slug, "plan": plan, "owner_user_id": owner_id, "first_api_key_id": key_id},
                )  # fmt: skip
        except UniqueViolation as exc:
            if exc.diag.constraint_name == "tenants_slug_key":
                raise RelayError(ErrorKind.CONFLICT, f"The slug `{slug}` is taken.", param="slug") from None
            raise
        self._wake()
        return Signup(tenant, owner_id, key_id, minted.secret)

    async def get(self, call: Call, tenant: str) -> TenantRow:
        call.principal.require("settings:read")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            row = await store.get_tenant(conn, tenant_id)
        if row is None:
            raise _not_found(tenant_id)
        return row

    async def list(self, call: Call, *, status: str | None, after: tuple[datetime, str] | None, limit: int) -> list[TenantRow]:
        call.principal.require_platform("list tenants")
        async with self._db.system_tx() as conn:
            return await store.list_tenants(conn, status=status, after=after, limit=limit)

    async def update(self, call: Call, tenant: str, changes: Mapping[str, Any]) -> TenantRow:
        """Change ``name`` / ``metadata`` (settings:update) or ``plan`` (platform operators)."""
        principal = call.principal
        principal.require("settings:update")
        tenant_id = principal.tenant_scope(tenant)
        values = dict(changes)
        if not values:
            raise _bad("update_mask", "Nothing to update: name, plan or metadata.")
        if "name" in values and (not str(values["name"]).strip() or len(str(values["name"])) > 200):
            raise _bad("tenant.name", "name must be 1 to 200 characters.")
        if "plan" in values:
            principal.require_platform("change a tenant's plan")
            if values["plan"] not in PLANS:
                raise _bad("tenant.plan", f"plan must be one of {', '.join(PLANS)}.")
        if "metadata" in values:
            values["metadata"] = validate_metadata(values["metadata"])
        # relay_app may change name and metadata only; the plan goes through the owner pool.
        tx = self._db.system_tx() if principal.is_platform else self._db.tenant_tx(tenant_id)
        async with tx as conn:
            before = await store.get_tenant(conn, tenant_id, lock=True)
            if before is None:
                raise _not_found(tenant_id)
            if before.status == "deleted":
                raise RelayError(ErrorKind.FAILED_PRECONDITION, "A deleted tenant cannot be changed.", code="tenant_deleted")
            changed = {k: v for k, v in values.items() if getattr(before, k) != v}
            if not changed:
                return before
            after = await store.update_tenant(conn, tenant_id, changed)
            assert after is not None
            await call.audit(
                conn, tenant_id, "tenant.updated", resource_type="tenant", resource_id=tenant_id,
                metadata={"changed": sorted(changed), **({"name": after.name} if "name" in changed else {})},
            )  # fmt: skip
            staged = None
            if "plan" in changed:
                await call.audit(
                    conn, tenant_id, "tenant.plan_changed", resource_type="tenant", resource_id=tenant_id,
                    metadata={"from": before.plan, "to": after.plan},
                )  # fmt: skip
                staged = await self._invalidator.stage(conn, tenant_id, [("tenant", tenant_id)])
        if "plan" in changed:  # the plan rides in every cached key record and in the config
            await self._lifecycle.after_commit(tenant_id, staged)
        return after

    async def transition(self, call: Call, tenant: str, status: str, reason: str) -> TenantRow:
        """Operators move tenants through the lifecycle; a tenant's owner may only cancel (→ deleted)."""
        principal = call.principal
        tenant_id = principal.tenant_scope(tenant)
        if not principal.is_platform:
            if status != "deleted":
                raise RelayError(
                    ErrorKind.PERMISSION_DENIED,
                    "Only platform operators may change a tenant's status; you may only cancel (delete) your tenant.",
                )
            principal.require("settings:delete")
        if len(reason) > 500:
            raise _bad("reason", "reason is at most 500 characters.")
        row = await self._lifecycle.transition(tenant_id, status, call, reason=reason)
        assert row is not None
        return row
