"""The console's aiohttp application and its process entry point."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from relay_server.dashboard import (
    audit_pages,
    auth_pages,
    billing_pages,
    member_pages,
    operator_infra_pages,
    operator_pages,
    request_pages,
    settings_pages,
    tenant_pages,
    thread_pages,
)
from relay_server.dashboard.accounts import Accounts, open_pool
from relay_server.dashboard.middleware import session_middleware
from relay_server.dashboard.relay_api import ApiConfig, RelayApi
from relay_server.dashboard.web import ACCOUNTS, API, BASE

log = logging.getLogger("relay.dashboard")
STATIC_DIR = Path(__file__).parent / "static"


def build_app(dsn: str, api_config: ApiConfig) -> web.Application:
    app = web.Application(middlewares=[session_middleware], client_max_size=64 * 1024)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await open_pool(dsn)
        api = RelayApi(api_config)
        app[API] = api
        app[ACCOUNTS] = Accounts(pool, api.memberships)
        yield
        await app[API].close()
        await pool.close()

    app.cleanup_ctx.append(resources)
    app.add_routes(auth_pages.routes)
    app.add_routes(tenant_pages.routes)
    app.add_routes(operator_pages.routes)
    app.add_routes(request_pages.routes)
    app.add_routes(thread_pages.routes)
    app.add_routes(billing_pages.routes)
    app.add_routes(member_pages.routes)
    app.add_routes(audit_pages.routes)
    app.add_routes(settings_pages.routes)
    app.add_routes(operator_infra_pages.routes)
    app.router.add_static(f"{BASE}/static/", STATIC_DIR, append_version=True)
    return app


def config_from_env(env: dict[str, str]) -> tuple[str, ApiConfig, int]:
    missing = [name for name in ("DATABASE_URL", "RELAY_JWT_SECRET", "RELAY_GRPC_TARGET") if not env.get(name)]
    if missing:
        raise SystemExit(f"relay dashboard: set {', '.join(missing)}")
    config = ApiConfig(
        grpc_target=env["RELAY_GRPC_TARGET"],
        jwt_secret=env["RELAY_JWT_SECRET"],
        jwt_issuer=env.get("RELAY_JWT_ISSUER", "relay"),
        admin_token=env.get("RELAY_ADMIN_TOKEN", ""),
    )
    return env["DATABASE_URL"], config, int(env.get("RELAY_DASHBOARD_PORT", "8090"))


def main() -> None:
    logging.basicConfig(level=os.environ.get("RELAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    dsn, config, port = config_from_env(dict(os.environ))
    # Loopback only: browsers reach it through Envoy at /dashboard.
    web.run_app(build_app(dsn, config), host="127.0.0.1", port=port, print=None, access_log=None,
                loop=asyncio.new_event_loop())
