"""relay.admin.v1.ModelCatalogService: read the model catalog."""

from __future__ import annotations

from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.error_mapping import abort, as_relay_error
from relay_server.api.openai_service import request_metadata
from relay_server.api.pagination import page
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.request import new_request_id
from relay_server.pipeline.routing.catalog import Catalog


def _message(entry: CatalogEntry) -> catalog_pb2.CatalogModel:
    return catalog_pb2.CatalogModel(
        id=entry.model_id,
        provider_id=entry.provider_id,
        relay_name=entry.relay_name,
        provider_name=entry.provider_name,
        display_name=entry.relay_name,
        kind=entry.kind,
        input_cost_per_1m=str(entry.input_cost_per_1m),
        output_cost_per_1m=str(entry.output_cost_per_1m),
        context_window=entry.context_window,
        max_output_tokens=entry.max_output_tokens or 0,
        supports_streaming=entry.kind != "embedding",
        status="active",
    )


class ModelCatalogServicer(catalog_pb2_grpc.ModelCatalogServiceServicer):
    def __init__(self, admin_auth: AdminAuthenticator, catalog: Catalog) -> None:
        self._auth = admin_auth
        self._catalog = catalog

    async def ListCatalogModels(self, request, context):  # noqa: N802 (gRPC naming)
        request_id = new_request_id()
        try:
            self._auth.authenticate(request_metadata(context))
            entries = [e for e in self._catalog.entries() if not request.provider_id or e.provider_id == request.provider_id]
            items, next_token = page(entries, request.page_size, request.page_token, key=lambda e: e.relay_name)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        return catalog_pb2.ListCatalogModelsResponse(models=[_message(e) for e in items], next_page_token=next_token)
