"""Routing changes as admin operations: virtual models, budget routes, provider regions.

A tenant's own virtual models and budget routes need that tenant's ``settings``
permissions; global virtual models and provider regions need a platform operator.
Each change is validated here, written with its audit row in one transaction, then
announced through ``CatalogSync`` so every worker routes by it on its next request.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from relay_server.catalog.admin import NAME, REGION, Announcer
from relay_server.domain.routing import STRATEGIES, BudgetRoute, Target, VirtualModel
from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.storage.postgres import virtual_models as store
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.tenancy.calls import Call

MAX_TARGETS = 16
MAX_FALLBACKS = 5
MAX_WEIGHT = 1000
_MODEL_NAMES = """
SELECT 1 FROM models WHERE relay_name = %(n)s OR id = %(n)s
UNION ALL SELECT 1 FROM model_aliases WHERE alias = %(n)s LIMIT 1
"""


def _bad(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def _name(value: str, param: str) -> str:
    value = value.strip()
    if not NAME.match(value):  # one naming rule for every routable name
        raise _bad(param, f"{param} must be 1-128 characters of letters, digits and . _ : / @ + - (got {value!r}).")
    return value


def parse_threshold(text: str) -> int:
    """"90" / "99.5" percent → basis points (exact: at most two decimals)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise _bad("budget_route.threshold_percent", f"threshold_percent must be a number, got {text!r}.") from None
    bp = value * 100
    if not value.is_finite() or bp != bp.to_integral_value() or not 0 < bp <= 10_000:
        raise _bad("budget_route.threshold_percent", "threshold_percent must be above 0 and at most 100, with at most two decimals.")
    return int(bp)


async def _is_model(conn: Conn, name: str) -> bool:
    return await (await conn.execute(_MODEL_NAMES, {"n": name})).fetchone() is not None


async def _exists(conn: Conn, tenant_id: str | None, name: str) -> bool:
    """A catalog model, or a virtual model the tenant sees."""
    if await _is_model(conn, name):
        return True
    if await store.find(conn, None, name) is not None:
        return True
    return tenant_id is not None and await store.find(conn, tenant_id, name) is not None


class RoutingAdmin:
    def __init__(self, db: Database, announcer: Announcer) -> None:
        self._db = db
        self._announcer = announcer

    def _owner(self, call: Call, tenant_id: str, permission: str) -> str | None:
        """The virtual model's owner: None (global) for an operator naming no tenant."""
        principal = call.principal
        if principal.is_platform and not tenant_id.strip():
            return None
        principal.require(permission)
        return principal.tenant_scope(tenant_id)

    async def _tenant_exists(self, conn: Conn, tenant_id: str | None) -> None:
        if tenant_id is not None and await (await conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,))).fetchone() is None:
            raise RelayError(ErrorKind.NOT_FOUND, f"Unknown tenant `{tenant_id}`.", param="tenant_id")

    async def list_virtual_models(self, call: Call, tenant_id: str) -> list[VirtualModel]:
        owner = self._owner(call, tenant_id, "settings:read")
        async with self._db.system_tx() as conn:
            return await store.list_for(conn, owner)

    async def upsert_virtual_model(self, call: Call, draft: VirtualModel) -> VirtualModel:
        owner = self._owner(call, draft.tenant_id or "", "settings:update")
        name = _name(draft.name, "virtual_model.name")
        if draft.strategy not in STRATEGIES:
            raise _bad("virtual_model.strategy", f"strategy must be one of {', '.join(STRATEGIES)}.")
        if not 1 <= len(draft.targets) <= MAX_TARGETS:
            raise _bad("virtual_model.targets", f"A virtual model needs 1 to {MAX_TARGETS} targets.")
        if len(draft.fallbacks) > MAX_FALLBACKS:
            raise _bad("virtual_model.fallbacks", f"At most {MAX_FALLBACKS} fallbacks.")
        targets = tuple(
            Target(_name(t.model, "virtual_model.targets"), t.provider_id.strip() if t.provider_id else None, t.weight or 1)
            for t in draft.targets
        )
        if len(set(targets)) != len(targets):
            raise _bad("virtual_model.targets", "A target appears twice.")
        if any(not 1 <= t.weight <= MAX_WEIGHT for t in targets):
            raise _bad("virtual_model.targets", f"weight must be between 1 and {MAX_WEIGHT}.")
        fallbacks = tuple(_name(f, "virtual_model.fallbacks") for f in draft.fallbacks)
        async with self._db.system_tx() as conn:
            await self._tenant_exists(conn, owner)
            if await _is_model(conn, name):
                raise RelayError(ErrorKind.CONFLICT, f"`{name}` is a catalog model: a virtual model cannot hide it.", param="virtual_model.name")
            for target in targets:
                if not await _is_model(conn, target.model):
                    raise _bad("virtual_model.targets", f"Unknown catalog model `{target.model}` in targets.")
                provider = target.provider_id
                if provider and await (await conn.execute("SELECT 1 FROM providers WHERE id = %s", (provider,))).fetchone() is None:
                    raise _bad("virtual_model.targets", f"Unknown provider `{provider}` in targets.")
            for fallback in fallbacks:
                if fallback == name or not await _exists(conn, owner, fallback):
                    raise _bad("virtual_model.fallbacks", f"`{fallback}` is not a model or another virtual model.")
            current = await store.find(conn, owner, name, lock=True)
            record = VirtualModel(current.id if current else new_id("vm"), name, owner, draft.strategy, targets, fallbacks)
            if current == record:
                return record
            await store.save(conn, record, exists=current is not None)
            await call.audit(
                conn, owner, "routing.virtual_model_updated" if current else "routing.virtual_model_created",
                resource_type="virtual_model", resource_id=record.id,
                metadata={"name": name, "before": _plain(current), "after": _plain(record)},
            )  # fmt: skip
        await self._announcer.changed()
        return record

    async def delete_virtual_model(self, call: Call, tenant_id: str, name: str) -> None:
        owner = self._owner(call, tenant_id, "settings:update")
        async with self._db.system_tx() as conn:
            if await call.replay_of(conn, "routing.virtual_model_deleted", owner) is not None:
                return
            current = await store.find(conn, owner, name.strip(), lock=True)
            if current is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"No virtual model `{name}`.", param="name")
            await store.delete(conn, current.id)
            await call.audit(conn, owner, "routing.virtual_model_deleted", resource_type="virtual_model",
                             resource_id=current.id, metadata={"before": _plain(current)})  # fmt: skip
        await self._announcer.changed()

    async def list_budget_routes(self, call: Call, tenant_id: str) -> list[BudgetRoute]:
        call.principal.require("settings:read")
        tenant = call.principal.tenant_scope(tenant_id)
        async with self._db.system_tx() as conn:
            return await store.list_rules(conn, tenant)

    async def upsert_budget_route(self, call: Call, draft: BudgetRoute) -> BudgetRoute:
        call.principal.require("settings:update")
        tenant = call.principal.tenant_scope(draft.tenant_id)
        alias = _name(draft.alias, "budget_route.alias")
        route_to = _name(draft.route_to, "budget_route.route_to")
        if route_to == alias:
            raise _bad("budget_route.route_to", "route_to must differ from alias.")
        key_id = (draft.key_id or "").strip() or None
        async with self._db.system_tx() as conn:
            await self._tenant_exists(conn, tenant)
            for param, name in (("budget_route.alias", alias), ("budget_route.route_to", route_to)):
                if not await _exists(conn, tenant, name):
                    raise _bad(param, f"`{name}` is not a model or a virtual model of this tenant.")
            if key_id is not None:
                cur = await conn.execute("SELECT 1 FROM api_keys WHERE tenant_id = %s AND id = %s", (tenant, key_id))
                if await cur.fetchone() is None:
                    raise RelayError(ErrorKind.NOT_FOUND, f"No API key `{key_id}` in this tenant.", param="budget_route.key_id")
            current = await store.find_rule(conn, tenant, key_id, alias)
            rule = BudgetRoute(current.id if current else new_id("br"), tenant, key_id, alias, route_to, draft.threshold_bp)
            if current == rule:
                return rule
            await store.save_rule(conn, rule, exists=current is not None)
            await call.audit(
                conn, tenant, "routing.budget_route_updated" if current else "routing.budget_route_created",
                resource_type="budget_route", resource_id=rule.id,
                metadata={"before": _plain(current), "after": _plain(rule)},
            )  # fmt: skip
        await self._announcer.changed()
        return rule

    async def delete_budget_route(self, call: Call, tenant_id: str, key_id: str, alias: str) -> None:
        call.principal.require("settings:update")
        tenant = call.principal.tenant_scope(tenant_id)
        async with self._db.system_tx() as conn:
            if await call.replay_of(conn, "routing.budget_route_deleted", tenant) is not None:
                return
            current = await store.find_rule(conn, tenant, key_id.strip() or None, alias.strip())
            if current is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"No budget route for `{alias}`.", param="alias")
            await store.delete_rule(conn, current.id)
            await call.audit(conn, tenant, "routing.budget_route_deleted", resource_type="budget_route",
                             resource_id=current.id, metadata={"before": _plain(current)})  # fmt: skip
        await self._announcer.changed()

    async def set_provider_region(self, call: Call, provider_id: str, region: str) -> str | None:
        call.principal.require_platform("set a provider's region")
        value = region.strip() or None
        if value is not None and not REGION.match(value):
            raise _bad("region", f"region must be lower-case letters, digits and - (got {region!r}).")
        async with self._db.system_tx() as conn:
            cur = await conn.execute("SELECT region FROM providers WHERE id = %s FOR UPDATE", (provider_id.strip(),))
            row = await cur.fetchone()
            if row is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"Unknown provider `{provider_id}`.", param="provider_id")
            if row["region"] == value:
                return value
            await conn.execute("UPDATE providers SET region = %s WHERE id = %s", (value, provider_id.strip()))
            await call.audit(conn, None, "routing.provider_region_set", resource_type="provider",
                             resource_id=provider_id.strip(), metadata={"before": row["region"], "after": value})  # fmt: skip
        await self._announcer.changed()
        return value


def _plain(value: VirtualModel | BudgetRoute | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, BudgetRoute):
        return {"alias": value.alias, "route_to": value.route_to, "threshold_bp": value.threshold_bp, "key_id": value.key_id}
    return {
        "strategy": value.strategy, "fallbacks": list(value.fallbacks),
        "targets": [{"model": t.model, "provider_id": t.provider_id, "weight": t.weight} for t in value.targets],
    }  # fmt: skip
