"""The threads browser (``threads:read``), read-only: the tenant's threads and one thread's
messages, through ``ThreadBrowserService``.

Threads are created and written by API keys (the thread API); these pages only
show what is stored.  The server scopes every read to the member's tenant, so
another tenant's thread id is a 404 here like any unknown id.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict

from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import PAGE_SIZE, _auth, _member, _provisioning, _status, ts
from relay_server.dashboard.web import API, BASE, render

routes = web.RouteTableDef()
MESSAGES_PAGE = 100


def _metadata(thread: Any) -> str:
    """The thread's metadata as ``key: value`` pairs."""
    data = MessageToDict(thread.metadata) if thread.HasField("metadata") else {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(data.items()))


def _blocks(message: Any) -> str:
    """What a message holds besides text (tool calls and results, images), by block type."""
    kinds = [str(MessageToDict(b).get("type", "?")) for b in message.content]
    return ", ".join(k for k in kinds if k != "text")


@routes.get(f"{BASE}/threads")
async def threads(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    if (waiting := _provisioning(request, member)) is not None:
        return waiting
    end_user = request.query.get("end_user_id", "").strip()
    rows: list[Any] = []
    error, next_token, status = "", "", 200
    try:
        reply = await request.app[API].client.thread_browser.list_tenant_threads(
            page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""),
            **({"end_user_id": end_user} if end_user else {}), **_auth(request, member),
        )
        rows, next_token = list(reply.threads), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "threads.html", status, member=member, rows=rows, next_page_token=next_token,
                  end_user_id=end_user, error=error, ts=ts, metadata=_metadata)


@routes.get(BASE + "/threads/{thread_id}")
async def thread_detail(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    thread_id = request.match_info["thread_id"]
    context: dict[str, Any] = {"thread": None, "messages": [], "next_page_token": "", "error": ""}
    status = 200
    try:
        reply = await request.app[API].client.thread_browser.list_tenant_thread_messages(
            thread_id=thread_id, page_size=MESSAGES_PAGE, page_token=request.query.get("page_token", ""),
            **_auth(request, member),
        )
        context.update(thread=reply.thread, messages=list(reply.messages), next_page_token=reply.next_page_token)
    except ApiError as exc:
        context["error"], status = api_error_message(exc), _status(exc)
    return render(request, "thread_detail.html", status, member=member, thread_id=thread_id, ts=ts,
                  metadata=_metadata, blocks=_blocks, **context)
