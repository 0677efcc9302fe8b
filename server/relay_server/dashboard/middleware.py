"""Every request: find the session, refuse state changes without the session's CSRF token,
send pages that are not to be framed, cached or sniffed."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay_server.dashboard.web import (
    ACCOUNTS,
    BASE,
    SESSION_COOKIE,
    SESSION_KEY,
    render,
)

# Reachable without a session (they carry their own double-submit CSRF check).
PUBLIC = {f"{BASE}/signin", f"{BASE}/accept", f"{BASE}/reset", f"{BASE}/healthz"}
STATIC = f"{BASE}/static/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # invitation and reset links carry their token in the URL
    "X-Frame-Options": "DENY",
}


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await _handle(request, handler)
    # The page's own time (API calls + rendering), for the bench and for browsers' devtools.
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(STATIC):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(STATIC) or request.path in PUBLIC:
        return await handler(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    session = await request.app[ACCOUNTS].session(cookie) if cookie else None
    if session is None:
        if request.method == "GET":
            raise web.HTTPSeeOther(f"{BASE}/signin")
        return render(request, "error.html", 401, message="Your session has ended. Sign in again.")
    request[SESSION_KEY] = session
    if request.method not in ("GET", "HEAD"):
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), session.csrf_token):
            return render(request, "error.html", 403, message="This form has expired. Reload the page and try again.")
    return await handler(request)
