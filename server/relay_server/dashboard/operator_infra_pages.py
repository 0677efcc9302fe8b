"""Operator pages about the platform itself: providers and their routes with live health and
circuit state (``ListProviders``, ``ListCatalogModels``), each provider's health events
(``ListProviderEvents``: circuit transitions, failure bursts, anomalies, status changes), the
model catalog with prices, and noisy-neighbour events across tenants (``ListAuditEvents`` with
``all_tenants``).

Read-only: changing the catalog stays with the API and the CLI, where it is reviewed.
Calls carry the platform admin token held by this process, as the signed-in operator; only
operators get here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from google.protobuf import timestamp_pb2

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
PROVIDER_EVENT_KINDS = {
    "circuit_opened": "circuit opened", "circuit_half_open": "circuit half-open", "circuit_closed": "circuit closed",
    "failure_burst": "failure burst", "anomaly": "anomaly", "status_changed": "status change",
}  # fmt: skip
# How far back the provider events page looks; the first is the default.  The table keeps 30 days.
SINCE_HOURS = {"24": "last 24 hours", "1": "last hour", "168": "last 7 days", "720": "last 30 days"}


@routes.get(f"{BASE}/operator/providers")
async def providers(request: web.Request) -> web.StreamResponse:
    """Every provider's health now, and which models each one serves (its routes)."""
    auth = _require_operator(request)
    api = request.app[API]
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
    auth = _require_operator(request)
    api = request.app[API]
    provider = request.query.get("provider_id", "").strip()
    error, status, models, next_token = "", 200, [], ""
    try:
        reply = await api.client.model_catalog.list_catalog_models(
            page_size=CATALOG_PAGE, page_token=request.query.get("page_token", ""), provider_id=provider,
            extra_metadata=auth,
        )
        models, next_token = list(reply.models), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "operator_catalog.html", status, models=models, provider=provider,
                  next_page_token=next_token, error=error)


@routes.get(f"{BASE}/operator/events")
async def events(request: web.Request) -> web.StreamResponse:
    auth = _require_operator(request)
    api = request.app[API]
    action = request.query.get("action", EVENT_ACTIONS[0])
    if action not in EVENT_ACTIONS:
        action = EVENT_ACTIONS[0]
    error, status, rows, next_token = "", 200, [], ""
    try:
        reply = await api.client.audit_log.list_audit_events(
            all_tenants=True, action=action, page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""),
            extra_metadata=auth,
        )
        rows, next_token = list(reply.events), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "operator_events.html", status, events=rows, action=action, actions=EVENT_ACTIONS,
                  next_page_token=next_token, error=error, ts=ts, details=_details)


@routes.get(f"{BASE}/operator/provider-events")
async def provider_events(request: web.Request) -> web.StreamResponse:
    """Circuit transitions, failure bursts, anomalies and status changes, newest first."""
    auth = _require_operator(request)
    api = request.app[API]
    provider = request.query.get("provider_id", "").strip()
    kind = request.query.get("kind", "")
    kind = kind if kind in PROVIDER_EVENT_KINDS else ""
    since = request.query.get("since", "")
    since = since if since in SINCE_HOURS else next(iter(SINCE_HOURS))
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=int(since)))
    error, status, rows, next_token = "", 200, [], ""
    try:
        reply = await api.client.model_catalog.list_provider_events(
            provider_id=provider, kind=kind, start_time=start, page_size=PAGE_SIZE,
            page_token=request.query.get("page_token", ""), extra_metadata=auth,
        )
        rows, next_token = list(reply.events), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "operator_provider_events.html", status, events=rows, provider=provider, kind=kind,
                  kinds=PROVIDER_EVENT_KINDS, since=since, since_choices=SINCE_HOURS, next_page_token=next_token,
                  error=error, ts=ts)
