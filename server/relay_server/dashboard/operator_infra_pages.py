"""Operator pages about the platform itself: providers and their routes with live health and
circuit state (``ListProviders``, ``ListCatalogModels``), the model catalog with prices, and
noisy-neighbour events across tenants (``ListAuditEvents`` with ``all_tenants``).

Read-only: changing the catalog stays with the API and the CLI, where it is reviewed.
Calls carry the platform admin token held by this process; only operators get here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from relay_server.dashboard.audit_pages import _details
from relay_server.dashboard.operator_pages import _require_operator
from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import PAGE_SIZE, _status, ts
from relay_server.dashboard.web import API, BASE, render

routes = web.RouteTableDef()
CATALOG_PAGE = 100
HEALTH_REFRESH_MS = 15_000
# The events an operator watches; the first is the default.
EVENT_ACTIONS = ("tenant.rate_limits_tightened", "tenant.status_changed", "dashboard.sign_in_locked")


@routes.get(f"{BASE}/operator/providers")
async def providers(request: web.Request) -> web.StreamResponse:
    """Every provider's health now, and which models each one serves (its routes)."""
    _require_operator(request)
    api = request.app[API]
    auth = api.operator_auth()
    error, status = "", 200
    rows: list[Any] = []
    routes_of: dict[str, list[tuple[str, str, str]]] = {}
    try:
        listed, models = await asyncio.gather(
            api.client.model_catalog.list_providers(extra_metadata=auth), _every_model(api.client, auth)
        )
        rows = list(listed.providers)
        for model in models:
            routes_of.setdefault(model.provider_id, []).append((model.relay_name, model.provider_name, model.status))
            for extra in model.routes:
                routes_of.setdefault(extra.provider_id, []).append((model.relay_name, extra.provider_name, extra.status))
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "operator_providers.html", status, providers=rows, routes_of=routes_of, error=error,
                  refresh_ms=HEALTH_REFRESH_MS)


async def _every_model(client: Any, auth: dict[str, str], max_pages: int = 20) -> list[Any]:
    """The whole catalog (a few hundred models), a page at a time, bounded."""
    models: list[Any] = []
    token = ""
    for _ in range(max_pages):
        reply = await client.model_catalog.list_catalog_models(page_size=CATALOG_PAGE, page_token=token,
                                                               extra_metadata=auth)
        models.extend(reply.models)
        token = reply.next_page_token
        if not token:
            break
    return models


@routes.get(f"{BASE}/operator/catalog")
async def catalog(request: web.Request) -> web.StreamResponse:
    _require_operator(request)
    api = request.app[API]
    provider = request.query.get("provider_id", "").strip()
    error, status, models, next_token = "", 200, [], ""
    try:
        reply = await api.client.model_catalog.list_catalog_models(
            page_size=CATALOG_PAGE, page_token=request.query.get("page_token", ""), provider_id=provider,
            extra_metadata=api.operator_auth(),
        )
        models, next_token = list(reply.models), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "operator_catalog.html", status, models=models, provider=provider,
                  next_page_token=next_token, error=error)


@routes.get(f"{BASE}/operator/events")
async def events(request: web.Request) -> web.StreamResponse:
    _require_operator(request)
    api = request.app[API]
    action = request.query.get("action", EVENT_ACTIONS[0])
    if action not in EVENT_ACTIONS:
        action = EVENT_ACTIONS[0]
    error, status, rows, next_token = "", 200, [], ""
    try:
        reply = await api.client.audit_log.list_audit_events(
            all_tenants=True, action=action, page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""),
            extra_metadata=api.operator_auth(),
        )
        rows, next_token = list(reply.events), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "operator_events.html", status, events=rows, action=action, actions=EVENT_ACTIONS,
                  next_page_token=next_token, error=error, ts=ts, details=_details)
