"""Tenancy components over a test's real Postgres (and Redis), without a server.

Background loops are not started: tests drive the job queue themselves
(``tenancy.runner.drain()``) so that every step is deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from relay_server.app.tenancy import Tenancy, build_tenancy
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.settings import Settings
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import PLATFORM
from relay_server.tenancy.tenants import SignupRequest

JWT_SECRET = "test-jwt-secret-with-enough-bytes-for-hs256"

# The job queue (procrastinate's table) under Relay's names, for ``SELECT ... FROM {JOBS}``.
JOBS = """(SELECT id, task_name AS kind, args ->> 'tenant_id' AS tenant_id, args -> 'payload' AS payload,
                  CASE status WHEN 'todo' THEN 'queued' WHEN 'doing' THEN 'running' ELSE status::text END AS status,
                  attempts, scheduled_at, worker_id FROM procrastinate_jobs) AS jobs"""


def operator(request_id: str = "req_test", idempotency_key: str = "") -> Call:
    return Call(PLATFORM, request_id, "203.0.113.7", idempotency_key)


@asynccontextmanager
async def tenancy_for(db: Database, redis: Redis | None, *, redis_url: str = "", **overrides: Any) -> AsyncIterator[Tenancy]:
    settings = Settings(
        database_url="postgresql://unused", redis_url=redis_url, jwt_secret=JWT_SECRET, background_jobs=False, **overrides
    )
    catalog = Catalog(PostgresCatalogStore(db))
    await catalog.load()
    tenancy = build_tenancy(settings, db, redis, catalog)
    try:
        yield tenancy
    finally:
        await tenancy.runner.stop()


async def signup(tenancy: Tenancy, slug: str = "acme", *, provision: bool = True, **kw: Any):
    """A tenant through the real signup path; provisioned (trial) unless told otherwise."""
    request = SignupRequest(slug=slug, name=kw.pop("name", slug.title()), owner_email=kw.pop("owner_email", f"owner@{slug}.test"), **kw)
    result = await tenancy.tenants.create(operator(), request)
    if provision:
        await tenancy.runner.drain()
    return result
