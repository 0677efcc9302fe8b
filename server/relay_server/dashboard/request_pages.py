"""One request's detail, linked from the request log (``ListRequests`` with ``request_id``).

Everything the log records about a call: where it was routed, how many
attempts it took, the tokens and where their counts came from, the cost and
its parts, the cache, the door it came through and how it ended.
"""

from __future__ import annotations

from aiohttp import web

from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import _auth, _member, _status, ts
from relay_server.dashboard.web import API, BASE, render

routes = web.RouteTableDef()

# The log's door → how the page names the API surface the call came through.
DOORS = {"openai": "OpenAI-compatible", "anthropic": "Anthropic-compatible", "responses": "Responses"}


@routes.get(BASE + "/requests/{request_id}")
async def request_detail(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    request_id = request.match_info["request_id"]
    try:
        reply = await request.app[API].client.usage.list_requests(
            request_id=request_id, page_size=1, **_auth(request, member)
        )
    except ApiError as exc:
        return render(request, "request_detail.html", _status(exc), member=member, record=None,
                      error=api_error_message(exc), request_id=request_id, ts=ts, doors=DOORS)
    record = reply.requests[0] if reply.requests else None
    return render(request, "request_detail.html", 200 if record else 404, member=member, record=record,
                  error="" if record else "No request with this id in this tenant.", request_id=request_id,
                  ts=ts, doors=DOORS)
