"""Providers and model routes in memory, and one ``Provider`` per provider row.

Read on every live request, so it is held in memory and reloaded from
Postgres periodically (like the catalog); a failed reload keeps the last good
copy.  Provider objects are rebuilt only when a row's API or base URL changes
(they are stateless apart from the shared HTTP client).
"""

from __future__ import annotations

from typing import Protocol

from relay_server.domain.provider import Provider
from relay_server.pipeline.reload import PeriodicReload
from relay_server.providers.http_client import Timeouts
from relay_server.providers.registry import build_provider
from relay_server.providers.upstream_http import UpstreamHttp
from relay_server.storage.postgres.providers import Directory, ProviderRow, RouteRow


class DirectoryStore(Protocol):
    async def load_directory(self) -> Directory: ...


class ProviderDirectory:
    def __init__(
        self,
        store: DirectoryStore,
        client: UpstreamHttp | None,
        *,
        timeouts: Timeouts | None = None,
        refresh_s: float = 30.0,
    ) -> None:
        self._store = store
        self._client = client
        self._timeouts = timeouts
        self._directory = Directory({}, {})
        self._built: dict[str, tuple[tuple[str, str], Provider]] = {}
        self._reload = PeriodicReload(self._fetch, every_s=refresh_s, name="provider-directory")

    async def load(self) -> None:
        await self._reload.now()

    async def _fetch(self) -> None:
        self._directory = await self._store.load_directory()

    def start(self) -> None:
        self._reload.start()

    async def stop(self) -> None:
        await self._reload.stop()

    def routable_providers(self) -> list[ProviderRow]:
        """Providers that go over the network and are not disabled by an operator."""
        return [p for p in self._directory.providers.values() if p.api != "test" and p.status != "disabled"]

    def routes_for(self, model_id: str) -> list[RouteRow]:
        """The model's routes over usable providers, most preferred first."""
        providers = self._directory.providers
        usable = [
            r for r in self._directory.routes.get(model_id, ())
            if r.provider_id in providers and providers[r.provider_id].api != "test"
            and providers[r.provider_id].status != "disabled"
        ]
        return sorted(usable, key=lambda r: (r.priority if r.priority is not None else providers[r.provider_id].priority, r.provider_id))

    def provider(self, provider_id: str) -> Provider:
        row = self._directory.providers[provider_id]
        signature = (row.api, row.base_url)
        built = self._built.get(provider_id)
        if built is None or built[0] != signature:
            built = (signature, build_provider(row.api, name=row.id, client=self._client, base_url=row.base_url, timeouts=self._timeouts))
            self._built[provider_id] = built
        return built[1]
