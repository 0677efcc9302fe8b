"""The names a caller may send as ``model``: catalog models and virtual models, as the model lists show them.

``GET /v1/models`` (both doors) and ``GET /v1/models/{id}`` list what a request
may name.  A virtual model (docs/routing.md) is one of those names, so it is
listed too, described by the dearest target the caller may use (the one its
spend reservation is sized for, ``resolve.ModelResolver``), under its own name.
A virtual model none of whose targets the caller may use is not listed.
"""

from __future__ import annotations

import dataclasses

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import RequestKind
from relay_server.domain.request import Principal, RequestContext
from relay_server.errors import RelayError
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.routing.virtual_models import VirtualModels


class ModelNames:
    def __init__(self, catalog: Catalog, virtual: VirtualModels | None = None) -> None:
        self._catalog = catalog
        self._virtual = virtual
        self._resolver = ModelResolver(catalog, virtual)

    def visible_to(self, principal: Principal) -> list[CatalogEntry]:
        entries = {e.relay_name: e for e in self._catalog.visible_to(principal)}
        if self._virtual is not None:
            for vm in self._virtual.visible_to(principal.tenant_id):
                try:
                    entries[vm.name] = self.resolve(vm.name, principal)
                except RelayError:
                    continue  # no target this caller may use
        return [entries[name] for name in sorted(entries)]

    def resolve(self, name: str, principal: Principal, kind: RequestKind | None = None) -> CatalogEntry:
        # A virtual model's targets are checked as chat models unless the caller names the kind.
        ctx = RequestContext(request_id="", kind=kind or "chat", body={}, metadata={})
        ctx.principal = principal
        if kind is None and (self._virtual is None or self._virtual.lookup(name, principal.tenant_id) is None):
            return self._catalog.resolve(name, principal)
        entry = self._resolver.resolve(ctx, name)
        if ctx.virtual is None:
            return entry
        return dataclasses.replace(entry, model_id=name, relay_name=name, aliases=())
