"""Virtual models and budget routes in memory, like the catalog.

Read on every request, so held here and reloaded from Postgres periodically and, after
an operator's change, on every worker at once (``catalog/sync.py`` broadcast).  A failed
reload keeps the last good copy.

Lookup order for a name: the tenant's own virtual model, then a global one; a name that
is neither is a plain catalog model.  Budget routes: the key's rule for the alias first,
then the tenant's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from relay_server.domain.routing import BudgetRoute, VirtualModel
from relay_server.pipeline.reload import PeriodicReload

MAX_DEPTH = 4  # budget routes and fallbacks that name virtual models: followed at most this deep


class VirtualModelStore(Protocol):
    async def load_virtual_models(self) -> tuple[Sequence[VirtualModel], Sequence[BudgetRoute]]: ...


class VirtualModels:
    def __init__(self, store: VirtualModelStore | None, *, refresh_s: float = 30.0) -> None:
        self._store = store
        self._by_name: dict[tuple[str | None, str], VirtualModel] = {}
        self._budget: dict[tuple[str, str | None, str], BudgetRoute] = {}
        self._tenants_with_rules: set[str] = set()
        self._reload = PeriodicReload(self._fetch, every_s=refresh_s, name="virtual-models")

    async def load(self) -> None:
        await self._reload.now()

    async def _fetch(self) -> None:
        if self._store is not None:
            self.replace(*await self._store.load_virtual_models())

    def replace(self, models: Iterable[VirtualModel], budget: Iterable[BudgetRoute] = ()) -> None:
        self._by_name = {(vm.tenant_id, vm.name): vm for vm in models}
        rules = {(r.tenant_id, r.key_id, r.alias): r for r in budget}
        self._budget = rules
        self._tenants_with_rules = {r.tenant_id for r in rules.values()}

    def start(self) -> None:
        self._reload.start()

    async def stop(self) -> None:
        await self._reload.stop()

    def lookup(self, name: str, tenant_id: str) -> VirtualModel | None:
        if not self._by_name:
            return None  # the common case: no virtual model at all, one dict check
        return self._by_name.get((tenant_id, name)) or self._by_name.get((None, name))

    def visible_to(self, tenant_id: str) -> list[VirtualModel]:
        mine = {vm.name: vm for (t, _), vm in self._by_name.items() if t is None}
        mine.update({vm.name: vm for (t, _), vm in self._by_name.items() if t == tenant_id})
        return [mine[n] for n in sorted(mine)]

    def budget_route(self, tenant_id: str, key_id: str, alias: str) -> BudgetRoute | None:
        if tenant_id not in self._tenants_with_rules:
            return None
        return self._budget.get((tenant_id, key_id, alias)) or self._budget.get((tenant_id, None, alias))

    def has_budget_routes(self, tenant_id: str) -> bool:
        return tenant_id in self._tenants_with_rules
