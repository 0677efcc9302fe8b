"""The tenant's audit log (``ListAuditEvents``; ``audit_log:read``): who did what, when,
from where — key and member changes, settings, lifecycle moves, console sign-ins."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict

from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import PAGE_SIZE, _auth, _member, _status, ts
from relay_server.dashboard.web import API, BASE, render

routes = web.RouteTableDef()


def _details(event: Any) -> str:
    """The event's metadata as ``key: value`` pairs (it never holds secrets: the server writes it)."""
    data = MessageToDict(event.metadata) if event.HasField("metadata") else {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(data.items()))


@routes.get(f"{BASE}/audit")
async def audit_log(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    filters = {name: request.query.get(name, "").strip() for name in ("action", "resource_id")}
    events: list[Any] = []
    error, next_token, status = "", "", 200
    try:
        reply = await request.app[API].client.audit_log.list_audit_events(
            page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""),
            **{k: v for k, v in filters.items() if v}, **_auth(request, member),
        )
        events, next_token = list(reply.events), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "audit.html", status, member=member, events=events, filters=filters,
                  next_page_token=next_token, error=error, ts=ts, details=_details)
