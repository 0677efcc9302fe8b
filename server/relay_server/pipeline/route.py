"""Step 5: which backend serves the request.

Test-mode keys never reach a provider: the spec's "router skips provider
selection entirely and calls a local mock handler".  Live keys are routed to
the catalog model's provider through the provider registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.catalog import CatalogEntry
from relay_server.pipeline.context import RequestContext
from relay_server.providers.base import Provider, ProviderCall
from relay_server.providers.testmode_faults import SimulatingProvider, requested_simulation


@dataclass(frozen=True, slots=True)
class Attempt:
    provider_id: str
    provider: Provider
    call: ProviderCall


class LiveRouter(Protocol):
    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]: ...


class Router:
    def __init__(self, test_provider: Provider, live: LiveRouter | None = None, *, timeout_s: float = 600.0) -> None:
        self._test = test_provider
        self._live = live
        self._timeout_s = timeout_s

    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]:
        assert ctx.principal is not None
        if ctx.principal.is_test:
            call = ProviderCall(
                kind=ctx.kind,
                body=ctx.body,
                provider_model=entry.relay_name,
                request_id=ctx.request_id,
                timeout_s=self._timeout_s,
            )
            simulation = requested_simulation(ctx.metadata)
            provider = self._test if simulation is None else SimulatingProvider(self._test, simulation)
            return [Attempt("test", provider, call)]
        if self._live is None:
            raise RelayError(
                ErrorKind.NO_PROVIDER_AVAILABLE,
                f"No provider is configured to serve `{entry.relay_name}` for live keys.",
            )
        return await self._live.plan(ctx, entry)
