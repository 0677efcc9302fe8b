"""The plans' definitions as admin operations: list the four plans, and set
or remove a plan's quotas, set its features and replace its allowed models.

Platform operators only (plans are global).  Each change is validated here,
written with its audit row in one transaction, then published on the policy
invalidation bus (``plan`` scope): every worker drops its cached plan quotas
and tenant features before the call returns, so the next request of a tenant
on the plan is limited by the new quotas.  A new list of allowed models also
drops the cached key records of the plan's tenants (they carry the list), in
memory and in the shared Redis cache.  The plan names stay the fixed set
of the tables' CHECK constraints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from relay_server.domain.policy import PLANS, RESOURCES
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import plans as store
from relay_server.storage.postgres.plans import PlanRecord
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.policy_bus import PolicyBus

__all__ = ["PLANS", "PlanAdmin", "PlanChange", "PlanRecord", "quota_window"]

MAX_LIMIT = 10**15
MAX_MODELS = 1000
_PLAN_CHANGED = [("plan", "")]


@dataclass(frozen=True, slots=True)
class PlanChange:
    """What UpdatePlan asks: quotas to set or remove, feature values, and (when not None)
    the plan's new list of allowed models (empty: every model)."""

    set_quotas: Mapping[str, int] = field(default_factory=dict)
    remove_quotas: Sequence[str] = ()
    features: Mapping[str, bool] = field(default_factory=dict)
    allowed_models: Sequence[str] | None = None


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

    async def update(self, call: Call, name: str, change: PlanChange) -> PlanRecord:
        """Apply ``change`` to plan ``name``; returns the plan as stored."""
        call.principal.require_platform("change a plan")
        plan = _plan_name(name)
        quotas, removed = _quotas(change.set_quotas, change.remove_quotas)
        features = dict(change.features)
        if not quotas and not removed and not features and change.allowed_models is None:
            raise _bad("set_quotas", "Nothing to update: give set_quotas, remove_quotas, features or allowed_models.")
        async with self._db.system_tx() as conn:
            await store.lock_plans(conn)
            plans = await store.list_plans(conn)
            before = plans[plan]
            known = {f for p in plans.values() for f in p.features}
            for feature in features:
                if feature not in known:
                    raise _bad("features", f"Unknown feature `{feature}` (features: {', '.join(sorted(known))}).")
            models = before.allowed_models if change.allowed_models is None else await _model_ids(conn, change.allowed_models)
            quota_changes = {r: [before.quotas.get(r), v] for r, v in quotas.items() if before.quotas.get(r) != v}
            quota_changes |= {r: [before.quotas[r], None] for r in sorted(removed) if r in before.quotas}
            feature_changes = {f: [before.features.get(f), v] for f, v in features.items() if before.features.get(f) != v}
            if not quota_changes and not feature_changes and models == before.allowed_models:
                return before  # nothing to audit or announce
            for resource, (_, limit) in quota_changes.items():
                if limit is None:
                    await store.remove_quota(conn, plan, resource)
                else:
                    await store.set_quota(conn, plan, resource, limit)
            for feature in feature_changes:
                await store.set_feature(conn, plan, feature, features[feature])
            changes, plan_keys = list(_PLAN_CHANGED), None
            metadata: dict[str, object] = {"quotas": quota_changes, "features": feature_changes}
            if models != before.allowed_models:
                await store.set_models(conn, plan, models)
                metadata["allowed_models"] = [list(before.allowed_models), list(models)]
                # The allowed models ride in every cached key record of the plan's tenants: every
                # worker drops its key records, and the bus tombstones the plan's shared ones (their
                # hashes read at publish time, not carried in the staged job: a plan may have many).
                changes.append(("key", ""))
                plan_keys = plan
            await call.audit(conn, None, "plan.updated", resource_type="plan", resource_id=plan, metadata=metadata)
            staged = await self._bus.stage(conn, None, changes, plan_keys=plan_keys)
            after = (await store.list_plans(conn))[plan]
        await self._bus.publish(None, changes, staged=staged, plan_keys=plan_keys)
        return after


async def _model_ids(conn: Conn, names: Sequence[str]) -> tuple[str, ...]:
    """The catalog ids of ``names`` (ids or relay names), sorted; an unknown one is a 400."""
    wanted = [n.strip() for n in names]
    if len(wanted) > MAX_MODELS:
        raise _bad("allowed_models", f"At most {MAX_MODELS} allowed models.")
    found = await store.model_ids(conn, wanted)
    unknown = [n for n in wanted if n not in found]
    if unknown:
        raise _bad("allowed_models", f"Unknown catalog model `{unknown[0]}` in allowed_models.")
    return tuple(sorted({found[n] for n in wanted}))
