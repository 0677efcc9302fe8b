"""Step 2: which model.  The catalog maps the name a tenant sends to a model
row (provider, provider-side name, prices, limits).

The catalog is small and read on every request, so it lives in memory and is
reloaded from the store periodically; it never blocks a request on Postgres.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import RequestKind
from relay_server.domain.request import Principal
from relay_server.errors import ErrorKind, RelayError, clip
from relay_server.pipeline.reload import PeriodicReload


class CatalogStore(Protocol):
    async def load_catalog(self) -> Sequence[CatalogEntry]: ...


# A chat model can serve legacy completions only when the catalog says so
# (kind "completion"); embeddings never share a model with text generation.
_KIND_FOR_REQUEST: dict[RequestKind, str] = {"chat": "chat", "completion": "completion", "embedding": "embedding"}


class Catalog:
    def __init__(self, store: CatalogStore, *, refresh_s: float = 30.0) -> None:
        self._store = store
        self._by_name: dict[str, CatalogEntry] = {}
        self._reload = PeriodicReload(self._fetch, every_s=refresh_s, name="catalog")

    async def load(self) -> None:
        await self._reload.now()

    async def _fetch(self) -> None:
        self.replace(await self._store.load_catalog())

    def replace(self, entries: Iterable[CatalogEntry]) -> None:
        entries = list(entries)
        by_name: dict[str, CatalogEntry] = {}
        for entry in entries:  # weakest first: an alias never hides a model's own name or id
            for alias in entry.aliases:
                by_name[alias] = entry
        for entry in entries:
            by_name[entry.model_id] = entry
        for entry in entries:
            by_name[entry.relay_name] = entry  # the relay name wins over an equal id
        self._by_name = by_name

    def start(self) -> None:
        self._reload.start()

    async def stop(self) -> None:
        await self._reload.stop()

    def entries(self) -> list[CatalogEntry]:
        return sorted({e.relay_name: e for e in self._by_name.values()}.values(), key=lambda e: e.relay_name)

    def visible_to(self, principal: Principal) -> list[CatalogEntry]:
        return [e for e in self.entries() if _allowed(e, principal)]

    def resolve(self, name: str, principal: Principal, kind: RequestKind | None = None) -> CatalogEntry:
        entry = self._by_name.get(name)
        if entry is None or not _allowed(entry, principal):
            raise RelayError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model `{clip(name)}` does not exist or you do not have access to it.",
                param="model",
            )
        if kind is not None and entry.kind != _KIND_FOR_REQUEST[kind]:
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"The model `{clip(name)}` is a{'n' if entry.kind[0] in 'ae' else ''} {entry.kind} model and cannot serve "
                f"this endpoint.",
                param="model",
                code="model_not_supported",
            )
        return entry


def _allowed(entry: CatalogEntry, principal: Principal) -> bool:
    """The plan, the tenant (``allowed_models`` config) and the key may each restrict
    the models it can call (empty: no restriction); a model must pass all three."""
    for allowed in (principal.allowed_models, principal.tenant_allowed_models, principal.plan_allowed_models):
        if allowed and entry.relay_name not in allowed and entry.model_id not in allowed:
            return False
    return True
