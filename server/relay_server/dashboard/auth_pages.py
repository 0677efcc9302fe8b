"""Sign in, sign out, accept an invitation, reset a password."""

from __future__ import annotations

from aiohttp import web

from relay_server.dashboard.accounts import SESSION_TTL, SignInRefused
from relay_server.dashboard.passwords import check_strength
from relay_server.dashboard.web import (
    ACCOUNTS,
    API,
    BASE,
    PRESIGN_COOKIE,
    SESSION_COOKIE,
    client_ip,
    presign_ok,
    render_presign,
    see_other,
    session_of,
    set_cookie,
)

routes = web.RouteTableDef()
_WRONG = "The email or password is not right."


@routes.get(f"{BASE}/signin")
async def signin_form(request: web.Request) -> web.Response:
    return render_presign(request, "signin.html", error="", email="")


@routes.post(f"{BASE}/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email, password = str(form.get("email", "")).strip().lower(), str(form.get("password", ""))
    if not presign_ok(request, form):
        return render_presign(request, "signin.html", 403, error="This form has expired; try again.", email=email)
    accounts, api = request.app[ACCOUNTS], request.app[API]
    try:
        ok = bool(email and password) and await accounts.check_password(email, password)
    except SignInRefused as exc:
        await api.record_sign_in(email, "locked", client_ip(request))
        return render_presign(request, "signin.html", 429, error=str(exc), email=email)
    if not ok:
        if email:
            await api.record_sign_in(email, "failed", client_ip(request))
        return render_presign(request, "signin.html", 401, error=_WRONG, email=email)
    await api.record_sign_in(email, "succeeded", client_ip(request))
    memberships = await accounts.memberships(email)
    is_operator = await accounts.is_operator(email)
    if not memberships and not is_operator:
        return render_presign(request, "signin.html", 403, email=email,
                              error="This account is not an active member of any tenant.")
    wanted = str(form.get("tenant", ""))
    chosen = next((m for m in memberships if m.tenant_id == wanted), memberships[0] if memberships else None)
    secret, _ = await accounts.open_session(email, chosen.user_id if chosen else None)
    response = see_other(f"{BASE}/" if chosen else f"{BASE}/operator/tenants")
    set_cookie(request, response, SESSION_COOKIE, secret, int(SESSION_TTL.total_seconds()))
    response.del_cookie(PRESIGN_COOKIE, path=BASE)
    raise response


@routes.post(f"{BASE}/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await request.app[ACCOUNTS].close_session(cookie)
    response = see_other(f"{BASE}/signin")
    response.del_cookie(SESSION_COOKIE, path=BASE)
    raise response


@routes.post(f"{BASE}/switch")
async def switch_tenant(request: web.Request) -> web.StreamResponse:
    """Act in another tenant this person belongs to: a fresh session for it."""
    session = session_of(request)
    assert session is not None
    form = await request.post()
    accounts = request.app[ACCOUNTS]
    target = next((m for m in await accounts.memberships(session.email) if m.tenant_id == form.get("tenant")), None)
    if target is None:
        raise see_other(f"{BASE}/")
    await accounts.close_session(request.cookies[SESSION_COOKIE])
    secret, _ = await accounts.open_session(session.email, target.user_id)
    response = see_other(f"{BASE}/")
    set_cookie(request, response, SESSION_COOKIE, secret, int(SESSION_TTL.total_seconds()))
    raise response


async def _set_password_page(request: web.Request, kind: str, title: str) -> web.StreamResponse:
    accounts = request.app[ACCOUNTS]
    token = request.query.get("token", "")
    email = await accounts.token_email(kind, token) if token else None
    if email is None:
        return render_presign(request, "set_password.html", 410, title=title, token="", email="", error=(
            "This link is not valid: it was used already, it expired, or it was mistyped. Ask for a new one."))
    if kind == "invitation" and await accounts.account_exists(email):
        # An invitation never sets the password of an existing account (the inviter sees the link):
        # that person signs in as before and finds the new tenant there.
        return render_presign(request, "set_password.html", 409, title=title, token="", email="", error=(
            "You already have a Relay account: sign in with it to use this tenant."))
    if request.method == "GET":
        return render_presign(request, "set_password.html", title=title, token=token, email=email, error="")
    form = await request.post()
    password = str(form.get("password", ""))
    if not presign_ok(request, form):
        return render_presign(request, "set_password.html", 403, title=title, token=token, email=email,
                              error="This form has expired; try again.")
    problem = check_strength(password)
    if problem is None and password != form.get("confirm"):
        problem = "The two passwords differ."
    if problem:
        return render_presign(request, "set_password.html", 400, title=title, token=token, email=email, error=problem)
    redeemed = await accounts.redeem_token(kind, token, password)
    if redeemed is None:
        return render_presign(request, "set_password.html", 410, title=title, token="", email="",
                              error="This link was used already.")
    await request.app[API].record_password_change(redeemed, "set" if kind == "invitation" else "reset", client_ip(request))
    raise see_other(f"{BASE}/signin")


@routes.route("*", f"{BASE}/accept")
async def accept_invitation(request: web.Request) -> web.StreamResponse:
    return await _set_password_page(request, "invitation", "Accept your invitation")


@routes.route("*", f"{BASE}/reset")
async def reset_password(request: web.Request) -> web.StreamResponse:
    return await _set_password_page(request, "password_reset", "Choose a new password")
