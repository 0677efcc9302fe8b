"""Per-tenant configuration and feature overrides, as admin operations.

Tenants manage their own cache TTL, allowed models and webhook URL; the
markup rate and feature overrides are commercial terms, so only platform
operators set them.  Every change is audited in its transaction and, once
committed, published on the invalidation bus (``config`` scope): every
worker's next request sees it (markup, caps, allowed models, features).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from relay_server.domain.tenants import FeatureState
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import tenant_config as store
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.config import CONFIG_KEYS, validate_entry
from relay_server.tenancy.policy_bus import PolicyBus

PLATFORM_ONLY_KEYS = frozenset({"markup_rate"})


async def _plan(conn: Conn, tenant_id: str) -> str:
    row = await (await conn.execute("SELECT plan, status FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
    if row is None or row["status"] == "deleted":
        raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
    return str(row["plan"])


class TenantSettingsAdmin:
    def __init__(
        self,
        db: Database,
        bus: PolicyBus,
        *,
        model_exists: Callable[[str], bool],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._bus = bus
        self._model_exists = model_exists
        self._now = now

    async def get_config(self, call: Call, tenant: str) -> dict[str, str]:
        call.principal.require("settings:read")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            await _plan(conn, tenant_id)
            return await store.read_config(conn, tenant_id)

    async def update_config(self, call: Call, tenant: str, changes: Mapping[str, str]) -> dict[str, str]:
        call.principal.require("settings:update")
        tenant_id = call.principal.tenant_scope(tenant)
        if not changes:
            raise RelayError(ErrorKind.BAD_REQUEST, "config must name at least one entry.", param="config")
        normalised: dict[str, str] = {}
        for key, value in changes.items():
            if key in PLATFORM_ONLY_KEYS:
                call.principal.require_platform(f"set `{key}`")
            if key not in CONFIG_KEYS:
                validate_entry(key, value)  # raises the unknown-key error
            normalised[key] = "" if value.strip() == "" else validate_entry(key, value, self._model_exists)
        async with self._db.tenant_tx(tenant_id) as conn:
            await _plan(conn, tenant_id)
            before = await store.read_config(conn, tenant_id)
            after = await store.write_config(conn, tenant_id, normalised)
            changed = {k: after.get(k) for k in normalised if before.get(k) != after.get(k)}
            if changed:
                await call.audit(
                    conn, tenant_id, "tenant.config_updated", resource_type="tenant_config", resource_id=tenant_id,
                    metadata={"changes": changed},
                )  # fmt: skip
                staged = await self._bus.stage(conn, tenant_id, [("config", tenant_id)])
        if changed:
            await self._bus.config_changed(tenant_id, staged)
        return after

    async def features(self, call: Call, tenant: str) -> list[FeatureState]:
        call.principal.require("settings:read")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            plan = await _plan(conn, tenant_id)
            return await store.read_features(conn, tenant_id, plan, self._now())

    async def set_override(
        self, call: Call, tenant: str, feature: str, enabled: bool, reason: str, expires_at: datetime | None
    ) -> FeatureState:
        call.principal.require_platform("override feature flags")
        tenant_id = call.principal.tenant_scope(tenant)
        if expires_at is not None and expires_at <= self._now():
            raise RelayError(ErrorKind.BAD_REQUEST, "expire_time must be in the future.", param="expire_time")
        if len(reason) > 500:
            raise RelayError(ErrorKind.BAD_REQUEST, "reason is at most 500 characters.", param="reason")
        async with self._db.tenant_tx(tenant_id) as conn:
            plan = await _plan(conn, tenant_id)
            if feature not in await store.known_features(conn):
                raise RelayError(ErrorKind.BAD_REQUEST, f"Unknown feature `{feature}`.", param="feature")
            await store.set_override(conn, tenant_id, feature, enabled, reason or None, expires_at)
            await call.audit(
                conn, tenant_id, "feature.override_set", resource_type="feature", resource_id=feature,
                metadata={"enabled": enabled, **({"reason": reason} if reason else {}),
                          **({"expires_at": expires_at.isoformat()} if expires_at else {})},
            )  # fmt: skip
            state = _find(await store.read_features(conn, tenant_id, plan, self._now()), feature)
            staged = await self._bus.stage(conn, tenant_id, [("config", tenant_id)])
        await self._bus.config_changed(tenant_id, staged)
        return state

    async def delete_override(self, call: Call, tenant: str, feature: str) -> FeatureState:
        call.principal.require_platform("override feature flags")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            plan = await _plan(conn, tenant_id)
            if feature not in await store.known_features(conn):
                raise RelayError(ErrorKind.BAD_REQUEST, f"Unknown feature `{feature}`.", param="feature")
            deleted = await store.delete_override(conn, tenant_id, feature)
            staged = None
            if deleted:
                await call.audit(conn, tenant_id, "feature.override_deleted", resource_type="feature", resource_id=feature)
                staged = await self._bus.stage(conn, tenant_id, [("config", tenant_id)])
            state = _find(await store.read_features(conn, tenant_id, plan, self._now()), feature)
        if deleted:
            await self._bus.config_changed(tenant_id, staged)
        return state


def _find(states: list[FeatureState], feature: str) -> FeatureState:
    for state in states:
        if state.feature == feature:
            return state
    return FeatureState(feature, False, "plan")
