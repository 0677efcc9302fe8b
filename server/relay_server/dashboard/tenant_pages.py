"""Pages of one tenant, as its member: overview, API keys, request log.

Every read and write is an admin API call with the member's JWT; what the
role may not do, the server refuses (403) and the page says so.  Buttons a
role cannot use are not shown, but hiding them is a courtesy, not the check.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from google.protobuf import field_mask_pb2

from relay_proto.relay.admin.v1 import api_keys_pb2, usage_pb2
from relay_server.dashboard.accounts import Membership
from relay_server.dashboard.key_forms import EDITABLE, describe_limits, form_values, key_limits
from relay_server.dashboard.relay_api import (
    ApiError,
    api_error_message,
    api_error_status,
)
from relay_server.dashboard.web import (
    API,
    BASE,
    render,
    see_other,
    session_of,
)

routes = web.RouteTableDef()
PAGE_SIZE = 50
CHART_ROWS = 31  # a month of days; the top 31 models or keys
# Days each chart covers.  Keys: a week — a tenant with 10k keys has 300k key-days a month, and
# ranking a week of them keeps the page within its 300 ms budget (bench/dashboard_pages.py).
CHART_DAYS = {"day": 30, "model": 30, "key": 7}
ROTATE_GRACE_S = 24 * 3600


def _member(request: web.Request) -> Membership:
    session = session_of(request)
    assert session is not None
    if session.membership is None:
        raise see_other(f"{BASE}/operator/tenants")
    return session.membership


def _auth(request: web.Request, member: Membership) -> dict[str, Any]:
    return {"extra_metadata": request.app[API].member_auth(member)}


def _provisioning(request: web.Request, member: Membership) -> web.Response | None:
    if member.tenant_status == "provisioning":
        return render(request, "provisioning.html", member=member)
    return None


def ts(value: Any) -> str:
    if value is None or not value.seconds:
        return ""
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


@routes.get(f"{BASE}/")
@routes.get(BASE)
async def overview(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    if (waiting := _provisioning(request, member)) is not None:
        return waiting
    api, auth = request.app[API].client, _auth(request, member)
    today = datetime.now(UTC).date()  # usage days are UTC days
    windows = {label: _window(today - timedelta(days=days - 1), today) for label, days in CHART_DAYS.items()}
    charts: dict[str, Any] = {}
    error = ""
    env = request.query.get("environment", "live")
    groups = (("day", usage_pb2.USAGE_GROUP_BY_DAY), ("model", usage_pb2.USAGE_GROUP_BY_MODEL),
              ("key", usage_pb2.USAGE_GROUP_BY_API_KEY))
    try:
        # The three queries are independent: at once, so the page waits for the slowest, not the sum.
        # Models and keys: only the busiest few (the server cuts them: a tenant may have 10k keys).
        replies = await asyncio.gather(*(
            api.usage.query_usage(group_by=group, environment=env, max_groups=0 if label == "day" else CHART_ROWS,
                                  **windows[label], **auth)
            for label, group in groups
        ))
        for (label, _), reply in zip(groups, replies, strict=True):
            rows = list(reply.rows)
            charts[label] = {"total": reply.total, "rows": rows, "hidden": max(0, reply.group_count - len(rows))}
    except ApiError as exc:
        error = api_error_message(exc)
    return render(request, "overview.html", member=member, charts=charts, error=error, environment=env,
                  bar=_bar_width)


def _window(start: date, end: date) -> dict[str, dict[str, int]]:
    return {"start_date": {"year": start.year, "month": start.month, "day": start.day},
            "end_date": {"year": end.year, "month": end.month, "day": end.day}}


def _bar_width(value: int, rows: Any) -> int:
    top = max((r.request_count for r in rows), default=0)
    return round(100 * value / top) if top else 0


@routes.get(f"{BASE}/keys")
async def keys(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    if (waiting := _provisioning(request, member)) is not None:
        return waiting
    return await _keys_page(request, member)


async def _keys_page(request: web.Request, member: Membership, status: int = 200, **extra: Any) -> web.Response:
    context: dict[str, Any] = {"created": None, "error": "", "notice": ""}
    context.update(extra)
    try:
        reply = await request.app[API].client.api_keys.list_api_keys(
            page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""), **_auth(request, member)
        )
        context["keys"], context["next_page_token"] = list(reply.api_keys), reply.next_page_token
    except ApiError as exc:
        context["keys"], context["next_page_token"] = [], ""
        context["error"] = context["error"] or api_error_message(exc)
        status = _status(exc)
    return render(request, "keys.html", status, member=member, ts=ts, pb=api_keys_pb2, limits=describe_limits,
                  values=form_values, **context)


@routes.post(f"{BASE}/keys")
async def create_key(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    form = await request.post()
    environment = api_keys_pb2.KEY_ENVIRONMENT_TEST if form.get("environment") == "test" else api_keys_pb2.KEY_ENVIRONMENT_LIVE
    scope = api_keys_pb2.KEY_SCOPE_MANAGEMENT if form.get("scope") == "management" else api_keys_pb2.KEY_SCOPE_INFERENCE
    models = [m.strip() for m in str(form.get("allowed_models", "")).split(",") if m.strip()]
    key = api_keys_pb2.ApiKey(name=str(form.get("name", "")).strip(), environment=environment, scope=scope,
                              allowed_models=models, end_user_id=str(form.get("end_user_id", "")).strip())
    try:
        key_limits(key, form)
    except ValueError as exc:
        return await _keys_page(request, member, 400, error=str(exc))
    try:
        reply = await request.app[API].client.api_keys.create_api_key(api_key=key, **_auth(request, member))
    except ApiError as exc:
        return await _keys_page(request, member, _status(exc), error=api_error_message(exc))
    # The secret is in this one response body (no-store) and nowhere else.
    return await _keys_page(request, member, 201, created={"key": reply.api_key, "secret": reply.secret,
                                                           "verb": "created", "grace": ""})


@routes.post(r"/dashboard/keys/{key_id}/rotate")
async def rotate_key(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    try:
        reply = await request.app[API].client.api_keys.rotate_api_key(
            key_id=request.match_info["key_id"], grace_period_seconds=ROTATE_GRACE_S, **_auth(request, member)
        )
    except ApiError as exc:
        return await _keys_page(request, member, _status(exc), error=api_error_message(exc))
    return await _keys_page(request, member, 200, created={"key": reply.api_key, "secret": reply.secret,
                                                           "verb": "rotated", "grace": ts(reply.old_secret_expire_time)})


@routes.post(r"/dashboard/keys/{key_id}/limits")
async def edit_key_limits(request: web.Request) -> web.StreamResponse:
    """Replace a key's limits, cap, expiry and allowed models (an empty field clears its value)."""
    member = _member(request)
    form = await request.post()
    key = api_keys_pb2.ApiKey(
        id=request.match_info["key_id"],
        allowed_models=[m.strip() for m in str(form.get("allowed_models", "")).split(",") if m.strip()],
    )
    try:
        key_limits(key, form)
    except ValueError as exc:
        return await _keys_page(request, member, 400, error=str(exc))
    try:
        reply = await request.app[API].client.api_keys.update_api_key(
            api_key=key, update_mask=field_mask_pb2.FieldMask(paths=list(EDITABLE)), **_auth(request, member)
        )
    except ApiError as exc:
        return await _keys_page(request, member, _status(exc), error=api_error_message(exc))
    return await _keys_page(request, member, notice=f"Limits of “{reply.api_key.name}” saved.")


@routes.post(r"/dashboard/keys/{key_id}/children")
async def create_child_key(request: web.Request) -> web.StreamResponse:
    """Mint a child of a management key; the server applies the rule for children (inference, the parent's environment)."""
    member = _member(request)
    form = await request.post()
    models = [m.strip() for m in str(form.get("allowed_models", "")).split(",") if m.strip()]
    key = api_keys_pb2.ApiKey(name=str(form.get("name", "")).strip(), allowed_models=models,
                              end_user_id=str(form.get("end_user_id", "")).strip())
    try:
        key_limits(key, form)
    except ValueError as exc:
        return await _keys_page(request, member, 400, error=str(exc))
    try:
        reply = await request.app[API].client.api_keys.create_api_key(
            api_key=key, parent_key_id=request.match_info["key_id"], **_auth(request, member)
        )
    except ApiError as exc:
        return await _keys_page(request, member, _status(exc), error=api_error_message(exc))
    return await _keys_page(request, member, 201, created={"key": reply.api_key, "secret": reply.secret,
                                                           "verb": "created", "grace": ""})


@routes.post(r"/dashboard/keys/{key_id}/name")
async def rename_key(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    form = await request.post()
    key = api_keys_pb2.ApiKey(id=request.match_info["key_id"], name=str(form.get("name", "")).strip())
    try:
        reply = await request.app[API].client.api_keys.update_api_key(
            api_key=key, update_mask=field_mask_pb2.FieldMask(paths=["name"]), **_auth(request, member)
        )
    except ApiError as exc:
        return await _keys_page(request, member, _status(exc), error=api_error_message(exc))
    return await _keys_page(request, member, notice=f"The key is now named “{reply.api_key.name}”.")


@routes.post(r"/dashboard/keys/{key_id}/revoke")
async def revoke_key(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    try:
        await request.app[API].client.api_keys.revoke_api_key(key_id=request.match_info["key_id"], **_auth(request, member))
    except ApiError as exc:
        return await _keys_page(request, member, _status(exc), error=api_error_message(exc))
    return await _keys_page(request, member, 200, notice="The key is revoked; calls with it now fail.")


def _status(exc: ApiError) -> int:
    return api_error_status(exc)


@routes.get(f"{BASE}/requests")
async def request_log(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    if (waiting := _provisioning(request, member)) is not None:
        return waiting
    filters = {name: request.query.get(name, "").strip() for name in ("model_id", "status", "api_key_id", "environment")}
    error, rows, next_token, status = "", [], "", 200
    try:
        reply = await request.app[API].client.usage.list_requests(
            page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""),
            **{k: v for k, v in filters.items() if v}, **_auth(request, member),
        )
        rows, next_token = list(reply.requests), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "requests.html", status, member=member, rows=rows, next_page_token=next_token,
                  filters=filters, error=error, ts=ts)


@routes.get(f"{BASE}/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "time": datetime.now(UTC).isoformat()})
