"""The plans' definitions as operators read and change them: quotas
(``quota_definitions``), features (``plan_features``) and allowed models
(``plan_models``).

Plans are global (no tenant): every function runs on the system pool, in the
caller's transaction (the admin call's, which also writes the audit row).
The plan names are the fixed set of the tables' CHECK constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay_server.domain.policy import PLANS, RESOURCES
from relay_server.storage.postgres.pool import Conn


@dataclass(frozen=True, slots=True)
class PlanRecord:
    name: str
    quotas: dict[str, int] = field(default_factory=dict)  # resource -> limit (-1: unlimited)
    features: dict[str, bool] = field(default_factory=dict)
    allowed_models: tuple[str, ...] = ()  # model ids; empty: every model


async def list_plans(conn: Conn, *, lock: bool = False) -> dict[str, PlanRecord]:
    """Every plan by name (``lock``: hold the quota and feature rows until commit)."""
    plans = {name: PlanRecord(name) for name in PLANS}
    suffix = " FOR UPDATE" if lock else ""
    for r in await (await conn.execute("SELECT plan, resource, limit_value FROM quota_definitions" + suffix)).fetchall():
        plans[r["plan"]].quotas[r["resource"]] = int(r["limit_value"])
    for r in await (await conn.execute("SELECT plan, feature, enabled FROM plan_features" + suffix)).fetchall():
        plans[r["plan"]].features[r["feature"]] = bool(r["enabled"])
    models: dict[str, list[str]] = {}
    for r in await (await conn.execute("SELECT plan, model_id FROM plan_models ORDER BY plan, model_id")).fetchall():
        models.setdefault(r["plan"], []).append(r["model_id"])
    return {name: PlanRecord(p.name, p.quotas, p.features, tuple(models.get(name, ()))) for name, p in plans.items()}


async def lock_plans(conn: Conn) -> None:
    """Serialise plan changes (a plan with no quota rows yet has nothing to lock row by row)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('relay-plans', 0))")


async def set_quota(conn: Conn, plan: str, resource: str, limit: int) -> None:
    await conn.execute(
        """INSERT INTO quota_definitions (plan, resource, limit_value, time_window) VALUES (%s, %s, %s, %s)
           ON CONFLICT (plan, resource, time_window) DO UPDATE SET limit_value = EXCLUDED.limit_value""",
        (plan, resource, limit, RESOURCES[resource]),
    )


async def remove_quota(conn: Conn, plan: str, resource: str) -> None:
    await conn.execute("DELETE FROM quota_definitions WHERE plan = %s AND resource = %s", (plan, resource))


async def model_ids(conn: Conn, names: list[str]) -> dict[str, str]:
    """Catalog model id by each of ``names`` that is a model's id or relay name."""
    cur = await conn.execute("SELECT id, relay_name FROM models WHERE id = ANY(%(n)s) OR relay_name = ANY(%(n)s)", {"n": names})
    found: dict[str, str] = {}
    for r in await cur.fetchall():
        found[r["id"]] = r["id"]
        found.setdefault(r["relay_name"], r["id"])
    return found


async def set_models(conn: Conn, plan: str, ids: tuple[str, ...]) -> None:
    await conn.execute("DELETE FROM plan_models WHERE plan = %s", (plan,))
    if ids:
        await conn.execute("INSERT INTO plan_models (plan, model_id) SELECT %s, unnest(%s::text[])", (plan, list(ids)))


async def key_hashes_on_plan(conn: Conn, plan: str) -> list[str]:
    """Every API key of the plan's tenants: their cached records carry the plan's allowed models."""
    cur = await conn.execute("SELECT k.key_hash FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE t.plan = %s", (plan,))
    return [r["key_hash"] for r in await cur.fetchall()]


async def set_feature(conn: Conn, plan: str, feature: str, enabled: bool) -> None:
    await conn.execute(
        """INSERT INTO plan_features (plan, feature, enabled) VALUES (%s, %s, %s)
           ON CONFLICT (plan, feature) DO UPDATE SET enabled = EXCLUDED.enabled""",
        (plan, feature, enabled),
    )
