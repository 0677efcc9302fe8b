"""Operator pages: every tenant, with lifecycle transitions (a reason is required).

Calls carry the platform admin token held by this process and the acting
operator's email (``operator_auth``), so the audit log names the operator;
only accounts with ``is_operator`` reach these handlers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay_proto.relay.admin.v1 import tenants_pb2
from relay_server.dashboard.relay_api import (
    ApiError,
    api_error_message,
)
from relay_server.dashboard.tenant_pages import PAGE_SIZE, _status, ts
from relay_server.dashboard.web import API, BASE, render, session_of

routes = web.RouteTableDef()
STATUSES = ("trial", "active", "suspended", "expired", "deleted")


def _require_operator(request: web.Request) -> dict[str, str]:
    """Refuse anyone but an operator; returns the call credentials that act as this operator."""
    session = session_of(request)
    if session is None or not session.is_operator:
        raise web.HTTPForbidden(text="Operators only.")
    return request.app[API].operator_auth(session.email)


def status_name(value: int) -> str:
    return tenants_pb2.TenantStatus.Name(value).removeprefix("TENANT_STATUS_").lower()


async def _tenants_page(request: web.Request, auth: dict[str, str], status: int = 200, **extra: Any) -> web.Response:
    context: dict[str, Any] = {"error": "", "notice": ""}
    context.update(extra)
    api = request.app[API]
    query = request.query.get("q", "").strip().lower()
    wanted = request.query.get("status", "")
    try:
        reply = await api.client.tenants.list_tenants(
            page_size=PAGE_SIZE if not query else 1000, page_token=request.query.get("page_token", ""),
            status=getattr(tenants_pb2, f"TENANT_STATUS_{wanted.upper()}", 0) if wanted else 0,
            extra_metadata=auth,
        )
        tenants = [t for t in reply.tenants if not query or query in f"{t.id} {t.slug} {t.name}".lower()]
        context["tenants"], context["next_page_token"] = tenants, reply.next_page_token
    except ApiError as exc:
        context["tenants"], context["next_page_token"] = [], ""
        context["error"] = context["error"] or api_error_message(exc)
    return render(request, "operator_tenants.html", status, ts=ts, status_name=status_name, statuses=STATUSES,
                  query=query, wanted=wanted, **context)


@routes.get(f"{BASE}/operator/tenants")
async def tenants(request: web.Request) -> web.StreamResponse:
    return await _tenants_page(request, _require_operator(request))


@routes.post(r"/dashboard/operator/tenants/{tenant_id}/transition")
async def transition(request: web.Request) -> web.StreamResponse:
    auth = _require_operator(request)
    form = await request.post()
    target, reason = str(form.get("status", "")), str(form.get("reason", "")).strip()
    if target not in STATUSES:
        return await _tenants_page(request, auth, 400, error="Choose a status.")
    if not reason:
        return await _tenants_page(request, auth, 400, error="Give a reason: it is kept in the audit log.")
    api = request.app[API]
    try:
        await api.client.tenants.transition_tenant(
            tenant_id=request.match_info["tenant_id"], status=getattr(tenants_pb2, f"TENANT_STATUS_{target.upper()}"),
            reason=reason, extra_metadata=auth,
        )
    except ApiError as exc:
        return await _tenants_page(request, auth, _status(exc), error=api_error_message(exc))
    return await _tenants_page(request, auth, notice=f"Tenant {request.match_info['tenant_id']} is now {target}.")
