"""relay.admin.v1.ModelCatalogService: proto <-> ``catalog.admin.CatalogAdmin``.

REST through Envoy: ``GET /v1/catalog/models``, ``GET /v1/catalog/providers``,
``PATCH /v1/catalog/providers/{id}`` (``catalog.provider_admin.ProviderAdmin``),
``GET /v1/catalog/provider-events``,
``PUT /v1/catalog/models/{relay_name}`` and ``DELETE /v1/catalog/models/{relay_name}``.
"""

from __future__ import annotations

from typing import Any

from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import decode_cursor, from_timestamp, handle, limit, paged, timestamp
from relay_server.api.pagination import page
from relay_server.catalog.admin import CatalogAdmin, ModelDraft, ModelRecord, ProviderState, RouteSpec, parse_price
from relay_server.catalog.provider_admin import ProviderAdmin
from relay_server.catalog.provider_events import ProviderEventReader
from relay_server.domain.provider_events import ProviderEventRow
from relay_server.tenancy.calls import Call


def _price(value: Any) -> str:
    return "" if value is None else format(value, "f")


def model_message(record: ModelRecord) -> catalog_pb2.CatalogModel:
    return catalog_pb2.CatalogModel(
        id=record.id,
        provider_id=record.provider_id,
        relay_name=record.relay_name,
        provider_name=record.provider_name,
        display_name=record.display_name,
        kind=record.kind,
        input_cost_per_1m=_price(record.input_cost_per_1m),
        output_cost_per_1m=_price(record.output_cost_per_1m),
        context_window=record.context_window,
        max_output_tokens=record.max_output_tokens or 0,
        supports_streaming=record.supports_streaming,
        supports_functions=record.supports_functions,
        supports_vision=record.supports_vision,
        supports_json_schema=record.supports_json_schema,
        status=record.status,
        aliases=list(record.aliases),
        routes=[
            catalog_pb2.ModelRoute(provider_id=r.provider_id, provider_name=r.provider_name, priority=r.priority or 0,
                                   status=r.status, region=r.region or "")
            for r in record.routes
        ],
        cache_read_cost_per_1m=_price(record.cache_read_cost_per_1m),
        cache_write_cost_per_1m=_price(record.cache_write_cost_per_1m),
        embedding_dimensions=record.embedding_dimensions or 0,
    )


def provider_message(state: ProviderState) -> catalog_pb2.Provider:
    row, window = state.row, state.window
    return catalog_pb2.Provider(
        id=row.id, name=row.name, api=row.api, base_url=row.base_url, status=row.status, priority=row.priority,
        circuit_state=state.circuit, consecutive_failures=state.failures,
        recent_requests=window.attempts, recent_failures=window.errors, recent_p95_ms=window.p95_ms or 0,
        region=row.region or "",
    )  # fmt: skip


def event_message(row: ProviderEventRow) -> catalog_pb2.ProviderEvent:
    return catalog_pb2.ProviderEvent(
        id=row.id, provider_id=row.provider_id, kind=row.kind, status=row.status or "", message=row.message or "",
        error_rate="" if row.error_rate is None else format(row.error_rate, "g"), p95_ms=row.p95_ms or 0,
        create_time=timestamp(row.created_at),
    )  # fmt: skip


def draft(model: catalog_pb2.CatalogModel) -> ModelDraft:
    """The message as a draft: absent (empty / 0) optional fields become None."""
    return ModelDraft(
        relay_name=model.relay_name,
        values={
            "id": model.id.strip() or None,
            "provider_id": model.provider_id.strip(),
            "provider_name": model.provider_name.strip(),
            "display_name": model.display_name.strip(),
            "kind": model.kind.strip() or "chat",
            "input_cost_per_1m": parse_price(model.input_cost_per_1m, "model.input_cost_per_1m", required=False),
            "output_cost_per_1m": parse_price(model.output_cost_per_1m, "model.output_cost_per_1m", required=False),
            "cache_read_cost_per_1m": parse_price(model.cache_read_cost_per_1m, "model.cache_read_cost_per_1m", required=False),
            "cache_write_cost_per_1m": parse_price(model.cache_write_cost_per_1m, "model.cache_write_cost_per_1m", required=False),
            "context_window": model.context_window,
            "max_output_tokens": model.max_output_tokens or None,
            "embedding_dimensions": model.embedding_dimensions or None,
            "supports_streaming": model.supports_streaming,
            "supports_functions": model.supports_functions,
            "supports_vision": model.supports_vision,
            "supports_json_schema": model.supports_json_schema,
            "status": model.status.strip() or "active",
            "aliases": tuple(a.strip() for a in model.aliases),
            "routes": tuple(
                RouteSpec(r.provider_id.strip(), r.provider_name.strip() or model.provider_name.strip() or model.relay_name,
                          r.priority or None, r.status.strip() or "active", r.region.strip() or None)
                for r in model.routes
            ),
        },
    )  # fmt: skip


def provider_mask(provider: catalog_pb2.Provider, paths: list[str]) -> list[str]:
    """The update mask, or (none given) the fields the message sets: non-empty strings, a non-zero priority."""
    if paths:
        return paths
    given = [f for f in ("name", "base_url", "region", "status") if getattr(provider, f).strip()]
    return given + (["priority"] if provider.priority else [])


class ModelCatalogServicer(catalog_pb2_grpc.ModelCatalogServiceServicer):
    def __init__(
        self, auth: AdminAuthenticator, admin: CatalogAdmin, providers: ProviderAdmin, events: ProviderEventReader
    ) -> None:
        self._auth = auth
        self._admin = admin
        self._providers = providers
        self._events = events

    async def ListCatalogModels(self, request, context):  # noqa: N802 (gRPC naming)
        async def run(call: Call) -> catalog_pb2.ListCatalogModelsResponse:
            records = [r for r in await self._admin.list_models(call) if not request.provider_id or r.provider_id == request.provider_id]
            items, token = page(records, request.page_size, request.page_token, key=lambda r: r.relay_name)
            return catalog_pb2.ListCatalogModelsResponse(models=[model_message(r) for r in items], next_page_token=token)

        return await handle(context, self._auth, run)

    async def ListProviders(self, request, context):  # noqa: N802
        async def run(call: Call) -> catalog_pb2.ListProvidersResponse:
            return catalog_pb2.ListProvidersResponse(providers=[provider_message(p) for p in await self._admin.list_providers(call)])

        return await handle(context, self._auth, run)

    async def UpdateProvider(self, request, context):  # noqa: N802
        p = request.provider

        async def run(call: Call) -> catalog_pb2.UpdateProviderResponse:
            values = {"name": p.name, "base_url": p.base_url, "priority": p.priority, "region": p.region, "status": p.status}
            row = await self._providers.update(call, p.id, values, provider_mask(p, list(request.update_mask.paths)))
            return catalog_pb2.UpdateProviderResponse(provider=provider_message(await self._admin.provider_state(row)))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def ListProviderEvents(self, request, context):  # noqa: N802
        async def run(call: Call) -> catalog_pb2.ListProviderEventsResponse:
            rows = await self._events.events(
                call, provider_id=request.provider_id, kind=request.kind, since=from_timestamp(request, "start_time"),
                until=from_timestamp(request, "end_time"), after=decode_cursor(request.page_token),
                limit=limit(request.page_size),
            )  # fmt: skip
            rows, token = paged(rows, request.page_size, lambda r: (r.created_at, r.id))
            return catalog_pb2.ListProviderEventsResponse(events=[event_message(r) for r in rows], next_page_token=token)

        return await handle(context, self._auth, run)

    async def UpsertCatalogModel(self, request, context):  # noqa: N802
        async def run(call: Call) -> catalog_pb2.UpsertCatalogModelResponse:
            record, _ = await self._admin.upsert(call, draft(request.model), request.update_mask.paths)
            return catalog_pb2.UpsertCatalogModelResponse(model=model_message(record))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def DeleteCatalogModel(self, request, context):  # noqa: N802
        async def run(call: Call) -> catalog_pb2.DeleteCatalogModelResponse:
            await self._admin.delete(call, request.relay_name)
            return catalog_pb2.DeleteCatalogModelResponse()

        return await handle(context, self._auth, run, idempotency_key=request.request_id)
