"""The platform part of ``relay apply``: providers' operator settings and the
plans' quotas and features, compared with what the admin API reports.

Like the rest of the planner (``plan.py``), each difference becomes one
``Change`` whose ``run`` makes it through the admin API, so it is validated,
audited and broadcast to every worker as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from google.protobuf import field_mask_pb2

from relay_proto.relay.admin.v1 import catalog_pb2, plans_pb2
from relay_server.declarative.spec import PlanSpec, ProviderSettings

C = TypeVar("C")
# plan.Change, passed in: this module is one of the planner's parts, below plan.py.
MakeChange = Callable[[str, str, list[str], Callable[[], object]], C]


def provider_changes(admin: Any, desired: list[ProviderSettings], current: dict[str, Any], change: MakeChange[C]) -> list[C]:
    """One ``~ provider`` change per provider whose settings differ."""
    out = []
    for want in desired:
        have = current[want.provider_id]
        differs = [name for name, value in want.values.items() if not _same(name, value, have)]
        if not differs:
            continue
        message = catalog_pb2.Provider(id=want.provider_id, **{name: want.values[name] for name in differs})
        request = catalog_pb2.UpdateProviderRequest(provider=message, update_mask=field_mask_pb2.FieldMask(paths=differs))
        lines = [f"{name}: {getattr(have, name)!r} -> {want.values[name]!r}" for name in differs]
        out.append(change("~", f"provider {want.provider_id}", lines, partial(admin, admin.catalog.UpdateProvider, request)))
    return out


def _same(name: str, value: Any, have: Any) -> bool:
    if name == "status":
        # Operators enable or disable; the health monitor moves an enabled provider between
        # active, degraded and down, which is not a difference to undo.
        return (value == "disabled") == (have.status == "disabled")
    return bool(getattr(have, name) == value)


def plan_changes(admin: Any, desired: list[PlanSpec], model_ids: dict[str, str], change: MakeChange[C]) -> list[C]:
    """One ``~ plan`` change per plan whose quotas, features or allowed models differ.

    ``model_ids``: catalog id by relay name (the server stores ids; a name it does not
    know yet is a model this apply creates, whose id is its name).
    """
    if not desired:
        return []
    plans = {p.name: p for p in admin(admin.plans.ListPlans, plans_pb2.ListPlansRequest()).plans}
    out = []
    for want in desired:
        have = plans[want.name]
        quotas = {q.resource: q.limit for q in have.quotas}
        set_quotas = {r: v for r, v in want.quotas.items() if v is not None and quotas.get(r) != v}
        removed = sorted(r for r, v in want.quotas.items() if v is None and r in quotas)
        unknown = sorted(set(want.features) - set(have.features))
        if unknown:
            raise ValueError(f"plans.{want.name}.features: unknown feature(s) {', '.join(unknown)} "
                             f"(features: {', '.join(sorted(have.features))})")  # fmt: skip
        features = {f: v for f, v in want.features.items() if have.features[f] != v}
        models = None
        if want.allowed_models is not None:
            wanted = sorted({model_ids.get(m, m) for m in want.allowed_models})
            models = wanted if wanted != sorted(have.allowed_models) else None
        if not set_quotas and not removed and not features and models is None:
            continue
        lines = [f"quotas.{r}: {_limit(quotas.get(r))} -> {_limit(v)}" for r, v in sorted(set_quotas.items())]
        lines += [f"quotas.{r}: {_limit(quotas[r])} -> (no quota)" for r in removed]
        lines += [f"features.{f}: {have.features[f]} -> {v}" for f, v in sorted(features.items())]
        if models is not None:
            lines.append(f"allowed_models: {_models(list(have.allowed_models))} -> {_models(models)}")
        request = plans_pb2.UpdatePlanRequest(
            name=want.name, remove_quotas=removed, features=features,
            set_quotas=[plans_pb2.PlanQuota(resource=r, limit=v) for r, v in sorted(set_quotas.items())],
        )  # fmt: skip
        if models is not None:
            request.allowed_models.models.extend(models)
        out.append(change("~", f"plan {want.name}", lines, partial(admin, admin.plans.UpdatePlan, request)))
    return out


def _models(ids: list[str]) -> str:
    return repr(sorted(ids)) if ids else "(every model)"


def _limit(value: int | None) -> str:
    return "(no quota)" if value is None else "unlimited" if value == -1 else str(value)
