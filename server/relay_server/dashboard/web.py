"""Shared plumbing of the console's handlers: templates, cookies, CSRF, the current session."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from relay_server.dashboard.accounts import Accounts, Session
from relay_server.dashboard.relay_api import RelayApi

BASE = "/dashboard"
SESSION_COOKIE = "relay_session"
PRESIGN_COOKIE = "relay_presign"  # double-submit CSRF token of the sign-in forms (no session yet)

ACCOUNTS: web.AppKey[Accounts] = web.AppKey("accounts", Accounts)
API: web.AppKey[RelayApi] = web.AppKey("api", RelayApi)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
SESSION_KEY = "dashboard_session"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def templates() -> jinja2.Environment:
    return _env


def is_tls(request: web.Request) -> bool:
    # Envoy sets x-forwarded-proto from the client's connection.
    return request.secure or request.headers.get("x-forwarded-proto", "") == "https"


def client_ip(request: web.Request) -> str:
    """The browser's address: Envoy appends it to x-forwarded-for (the console listens on loopback only)."""
    forwarded = request.headers.get("x-forwarded-for", "")
    return forwarded.split(",")[-1].strip() if forwarded else (request.remote or "")


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=BASE, httponly=True, samesite="Lax", secure=is_tls(request)
    )


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION_KEY)


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    session = session_of(request)
    body = _env.get_template(name).render(
        base=BASE,
        session=session,
        csrf=session.csrf_token if session else "",
        path=request.path,
        **context,
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def presign_token(request: web.Request) -> str:
    return request.cookies.get(PRESIGN_COOKIE) or secrets.token_urlsafe(24)


def render_presign(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    """A sign-in style form: its CSRF token is a double-submit cookie, as there is no session yet."""
    token = presign_token(request)
    response = render(request, name, status, presign=token, **context)
    set_cookie(request, response, PRESIGN_COOKIE, token, 3600)
    return response


def presign_ok(request: web.Request, form: Any) -> bool:
    cookie = request.cookies.get(PRESIGN_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, str(form.get("csrf", "")))


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)
