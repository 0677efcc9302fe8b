"""Step 2 with virtual models: the name a request sends → a virtual model or a catalog model.

A virtual model is planned from its targets (``targets.py``); admission still needs one
catalog entry to size the spend reservation, so it gets the dearest target the caller may
use: whichever target answers, the reservation covers it.  Billing prices the model that
actually answered (``failover.Served``).
"""

from __future__ import annotations

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.request import RequestContext
from relay_server.domain.routing import BudgetRoute, VirtualModel
from relay_server.errors import RelayError
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.virtual_models import VirtualModels


class ModelResolver:
    def __init__(self, catalog: Catalog, virtual: VirtualModels | None = None) -> None:
        self._catalog = catalog
        self._virtual = virtual

    def resolve(self, ctx: RequestContext, name: str) -> CatalogEntry:
        """The entry admission reserves for; notes the virtual model on ``ctx`` when it is one."""
        assert ctx.principal is not None
        vm = self._virtual.lookup(name, ctx.principal.tenant_id) if self._virtual is not None else None
        if vm is None:
            ctx.virtual = None
            return self._catalog.resolve(name, ctx.principal, ctx.kind)
        ctx.virtual = vm
        ctx.route.alias = ctx.route.alias or vm.name
        return self._dearest(ctx, vm)

    def _dearest(self, ctx: RequestContext, vm: VirtualModel) -> CatalogEntry:
        assert ctx.principal is not None
        entries: list[CatalogEntry] = []
        first_error: RelayError | None = None
        for target in vm.targets:
            try:
                entries.append(self._catalog.resolve(target.model, ctx.principal, ctx.kind))
            except RelayError as err:
                first_error = first_error or err
        if not entries:
            assert first_error is not None
            raise RelayError(first_error.kind, first_error.message.replace(f"`{vm.targets[0].model}`", f"`{vm.name}`"),
                             param="model", code=first_error.code)  # fmt: skip
        return max(entries, key=lambda e: (e.input_cost_per_1m + e.output_cost_per_1m, -entries.index(e)))

    def budget_route(self, ctx: RequestContext, name: str) -> BudgetRoute | None:
        assert ctx.principal is not None
        if self._virtual is None:
            return None
        return self._virtual.budget_route(ctx.principal.tenant_id, ctx.principal.key_id, name)

    def switch(self, ctx: RequestContext, rule: BudgetRoute, share: str) -> CatalogEntry:
        """Serve ``rule.alias`` with ``rule.route_to`` from now on (the budget threshold was reached)."""
        ctx.route.alias = rule.alias
        ctx.route.rule = f"budget {share} >= {rule.threshold_bp / 100:g}% of cap: {rule.alias} -> {rule.route_to}"
        return self.resolve(ctx, rule.route_to)
