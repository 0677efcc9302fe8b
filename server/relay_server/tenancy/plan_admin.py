"""The plans' definitions as admin operations: list the four plans, and set
or remove a plan's quotas and set its features.

Platform operators only (plans are global).  Each change is validated here,
written with its audit row in one transaction, then published on the policy
invalidation bus (``plan`` scope): every worker drops its cached plan quotas
and tenant features before the call returns, so the next request of a tenant
on the plan is limited by the new quotas.  The plan names stay the fixed set
of the tables' CHECK constraints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from relay_server.domain.policy import PLANS, RESOURCES
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import plans as store
from relay_server.storage.postgres.plans import PlanRecord
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.policy_bus import PolicyBus

__all__ = ["PLANS", "PlanAdmin", "PlanRecord", "quota_window"]

MAX_LIMIT = 10**15
_CHANGES = [("plan", "")]


def quota_window(resource: str) -> str:
    return RESOURCES.get(resource, "")


def _bad(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def _plan_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise _bad("name", "name is required (free, starter, pro or enterprise).")
    if name not in PLANS:
        raise RelayError(ErrorKind.NOT_FOUND, f"Unknown plan `{name}` (plans: {', '.join(PLANS)}).", param="name")
    return name


def _quotas(set_quotas: Mapping[str, int], remove: Sequence[str]) -> tuple[dict[str, int], set[str]]:
    for resource in [*set_quotas, *remove]:
        if resource not in RESOURCES:
            raise _bad("set_quotas" if resource in set_quotas else "remove_quotas",
                       f"Unknown quota resource `{resource}` (resources: {', '.join(RESOURCES)}).")  # fmt: skip
    both = set(set_quotas) & set(remove)
    if both:
        raise _bad("remove_quotas", f"`{sorted(both)[0]}` is both set and removed.")
    for resource, limit in set_quotas.items():
        if not -1 <= limit <= MAX_LIMIT:
            raise _bad("set_quotas", f"The {resource} limit must be a whole number ≥ 0, or -1 for unlimited (got {limit}).")
    return dict(set_quotas), set(remove)


class PlanAdmin:
    def __init__(self, db: Database, bus: PolicyBus) -> None:
        self._db = db
        self._bus = bus

    async def list_plans(self, call: Call) -> list[PlanRecord]:
        call.principal.require_platform("read the plans")
        async with self._db.system_tx() as conn:
            plans = await store.list_plans(conn)
        return [plans[name] for name in PLANS]

    async def update(
        self, call: Call, name: str, set_quotas: Mapping[str, int], remove_quotas: Sequence[str], features: Mapping[str, bool]
    ) -> PlanRecord:
        """Apply the changes to plan ``name``; returns the plan as stored."""
        call.principal.require_platform("change a plan")
        plan = _plan_name(name)
        quotas, removed = _quotas(set_quotas, remove_quotas)
        if not quotas and not removed and not features:
            raise _bad("set_quotas", "Nothing to update: give set_quotas, remove_quotas or features.")
        async with self._db.system_tx() as conn:
            await store.lock_plans(conn)
            plans = await store.list_plans(conn)
            before = plans[plan]
            known = {f for p in plans.values() for f in p.features}
            for feature in features:
                if feature not in known:
                    raise _bad("features", f"Unknown feature `{feature}` (features: {', '.join(sorted(known))}).")
            quota_changes = {r: [before.quotas.get(r), v] for r, v in quotas.items() if before.quotas.get(r) != v}
            quota_changes |= {r: [before.quotas[r], None] for r in sorted(removed) if r in before.quotas}
            feature_changes = {f: [before.features.get(f), v] for f, v in features.items() if before.features.get(f) != v}
            if not quota_changes and not feature_changes:
                return before  # nothing to audit or announce
            for resource, (_, limit) in quota_changes.items():
                if limit is None:
                    await store.remove_quota(conn, plan, resource)
                else:
                    await store.set_quota(conn, plan, resource, limit)
            for feature in feature_changes:
                await store.set_feature(conn, plan, feature, features[feature])
            await call.audit(
                conn, None, "plan.updated", resource_type="plan", resource_id=plan,
                metadata={"quotas": quota_changes, "features": feature_changes},
            )  # fmt: skip
            staged = await self._bus.stage(conn, None, _CHANGES)
            after = (await store.list_plans(conn))[plan]
        await self._bus.publish(None, _CHANGES, staged=staged)
        return after
