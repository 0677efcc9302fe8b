"""Members of a tenant: list, invite (``AddMember`` and a one-time link), change a role
(``UpdateMemberRole``), remove (``RemoveMember``).

The server decides who may do what: nobody grants a role with permissions
they lack, and the last owner stays.  A removed member's console session ends
at their next page (memberships are re-read on every request).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay_server.dashboard.accounts import Membership
from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import PAGE_SIZE, _auth, _member, _status, ts
from relay_server.dashboard.web import ACCOUNTS, API, BASE, render

routes = web.RouteTableDef()
ROLES = ("viewer", "developer", "admin", "owner")


@routes.get(f"{BASE}/members")
async def members(request: web.Request) -> web.StreamResponse:
    return await _members_page(request, _member(request))


async def _members_page(request: web.Request, member: Membership, status: int = 200, **extra: Any) -> web.Response:
    context: dict[str, Any] = {"invited": None, "error": "", "notice": ""}
    context.update(extra)
    try:
        reply = await request.app[API].client.tenants.list_members(
            tenant_id=member.tenant_id, page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""),
            **_auth(request, member),
        )
        context["members"], context["next_page_token"] = list(reply.members), reply.next_page_token
    except ApiError as exc:
        context["members"], context["next_page_token"] = [], ""
        context["error"] = context["error"] or api_error_message(exc)
        status = _status(exc) if status == 200 else status
    return render(request, "members.html", status, member=member, ts=ts, roles=ROLES, **context)


@routes.post(f"{BASE}/members")
async def invite_member(request: web.Request) -> web.StreamResponse:
    """Add the member through the API, then give the inviter a one-time link to pass on."""
    member = _member(request)
    form = await request.post()
    email = str(form.get("email", "")).strip().lower()
    role = str(form.get("role", ""))
    try:
        reply = await request.app[API].client.tenants.add_member(
            tenant_id=member.tenant_id, email=email, role=role, name=str(form.get("name", "")).strip(),
            **_auth(request, member),
        )
    except ApiError as exc:
        return await _members_page(request, member, _status(exc), error=api_error_message(exc))
    token = await request.app[ACCOUNTS].issue_token("invitation", reply.member.email)
    link = f"{request.scheme}://{request.host}{BASE}/accept?token={token}"
    return await _members_page(request, member, 201, invited={"email": reply.member.email, "link": link})


@routes.post(BASE + "/members/{user_id}/role")
async def change_role(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    form = await request.post()
    role = str(form.get("role", ""))
    try:
        reply = await request.app[API].client.tenants.update_member_role(
            tenant_id=member.tenant_id, user_id=request.match_info["user_id"], role=role, **_auth(request, member)
        )
    except ApiError as exc:
        return await _members_page(request, member, _status(exc), error=api_error_message(exc))
    return await _members_page(request, member, notice=f"{reply.member.email} is now {reply.member.role}.")


@routes.post(BASE + "/members/{user_id}/remove")
async def remove_member(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    try:
        reply = await request.app[API].client.tenants.remove_member(
            tenant_id=member.tenant_id, user_id=request.match_info["user_id"], **_auth(request, member)
        )
    except ApiError as exc:
        return await _members_page(request, member, _status(exc), error=api_error_message(exc))
    return await _members_page(request, member, notice=f"{reply.member.email} is no longer a member.")
