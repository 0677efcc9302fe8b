"""Virtual models and budget routes (migration 0025): the workers' load and the admin writes.

Every statement runs on the owner connection it is given (``system_tx``): virtual models
may be global, and the workers read every tenant's in one load, like the catalog.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from relay_server.domain.routing import BudgetRoute, Target, VirtualModel
from relay_server.storage.postgres.pool import Database

_VMS = "SELECT id, tenant_id, name, strategy, targets, fallbacks FROM virtual_models ORDER BY tenant_id NULLS FIRST, name"
_RULES = "SELECT id, tenant_id, key_id, alias, route_to, threshold_bp FROM budget_routes ORDER BY tenant_id, alias"


def _vm(row: dict[str, Any]) -> VirtualModel:
    targets = tuple(
        Target(str(t["model"]), t.get("provider_id") or None, int(t.get("weight") or 1)) for t in row["targets"] or ()
    )
    return VirtualModel(row["id"], row["name"], row["tenant_id"], row["strategy"], targets, tuple(row["fallbacks"] or ()))


def _rule(row: dict[str, Any]) -> BudgetRoute:
    return BudgetRoute(row["id"], row["tenant_id"], row["key_id"], row["alias"], row["route_to"], int(row["threshold_bp"]))


def targets_json(targets: tuple[Target, ...]) -> Jsonb:
    return Jsonb([{"model": t.model, "provider_id": t.provider_id, "weight": t.weight} for t in targets])


class PostgresVirtualModelStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load_virtual_models(self) -> tuple[list[VirtualModel], list[BudgetRoute]]:
        async with self._db.system_tx() as conn:
            vms = [_vm(r) for r in await (await conn.execute(_VMS)).fetchall()]
            rules = [_rule(r) for r in await (await conn.execute(_RULES)).fetchall()]
        return vms, rules


async def find(conn: AsyncConnection[Any], tenant_id: str | None, name: str, *, lock: bool = False) -> VirtualModel | None:
    cur = await conn.execute(
        f"SELECT id, tenant_id, name, strategy, targets, fallbacks FROM virtual_models "
        f"WHERE COALESCE(tenant_id, '') = %s AND name = %s{' FOR UPDATE' if lock else ''}",
        (tenant_id or "", name),
    )
    row = await cur.fetchone()
    return _vm(row) if row is not None else None


async def list_for(conn: AsyncConnection[Any], tenant_id: str | None) -> list[VirtualModel]:
    """A tenant's own virtual models and the global ones (tenant_id None: only the global ones)."""
    cur = await conn.execute(
        "SELECT id, tenant_id, name, strategy, targets, fallbacks FROM virtual_models "
        "WHERE tenant_id IS NULL OR tenant_id = %s ORDER BY name, tenant_id NULLS FIRST",
        (tenant_id or "",),
    )
    return [_vm(r) for r in await cur.fetchall()]


async def save(conn: AsyncConnection[Any], vm: VirtualModel, *, exists: bool) -> None:
    if exists:
        await conn.execute(
            "UPDATE virtual_models SET strategy = %s, targets = %s, fallbacks = %s, updated_at = now() WHERE id = %s",
            (vm.strategy, targets_json(vm.targets), list(vm.fallbacks), vm.id),
        )
    else:
        await conn.execute(
            "INSERT INTO virtual_models (id, tenant_id, name, strategy, targets, fallbacks) VALUES (%s, %s, %s, %s, %s, %s)",
            (vm.id, vm.tenant_id, vm.name, vm.strategy, targets_json(vm.targets), list(vm.fallbacks)),
        )


async def delete(conn: AsyncConnection[Any], vm_id: str) -> None:
    await conn.execute("DELETE FROM virtual_models WHERE id = %s", (vm_id,))


async def find_rule(conn: AsyncConnection[Any], tenant_id: str, key_id: str | None, alias: str) -> BudgetRoute | None:
    cur = await conn.execute(
        "SELECT id, tenant_id, key_id, alias, route_to, threshold_bp FROM budget_routes "
        "WHERE tenant_id = %s AND COALESCE(key_id, '') = %s AND alias = %s FOR UPDATE",
        (tenant_id, key_id or "", alias),
    )
    row = await cur.fetchone()
    return _rule(row) if row is not None else None


async def list_rules(conn: AsyncConnection[Any], tenant_id: str) -> list[BudgetRoute]:
    cur = await conn.execute(
        "SELECT id, tenant_id, key_id, alias, route_to, threshold_bp FROM budget_routes WHERE tenant_id = %s "
        "ORDER BY alias, key_id NULLS FIRST",
        (tenant_id,),
    )
    return [_rule(r) for r in await cur.fetchall()]


async def save_rule(conn: AsyncConnection[Any], rule: BudgetRoute, *, exists: bool) -> None:
    if exists:
        await conn.execute(
            "UPDATE budget_routes SET route_to = %s, threshold_bp = %s WHERE id = %s", (rule.route_to, rule.threshold_bp, rule.id)
        )
    else:
        await conn.execute(
            "INSERT INTO budget_routes (id, tenant_id, key_id, alias, route_to, threshold_bp) VALUES (%s, %s, %s, %s, %s, %s)",
            (rule.id, rule.tenant_id, rule.key_id, rule.alias, rule.route_to, rule.threshold_bp),
        )


async def delete_rule(conn: AsyncConnection[Any], rule_id: str) -> None:
    await conn.execute("DELETE FROM budget_routes WHERE id = %s", (rule_id,))
