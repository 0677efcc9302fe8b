"""relay.v1.HealthService: ``GET /health`` (liveness) and ``GET /ready``
(readiness) through Envoy, for load balancers and Kubernetes probes.

Liveness touches nothing: a worker that answers is alive (restarting it for a
database outage would not help).  Readiness asks Postgres (``SELECT 1``) and,
when configured, Redis (``PING``), each bounded by ``timeout_s``, and answers
200 with ``{"status": "ok", "checks": {...}}`` or 503 with the same shape
(through the error contract of ``envoy/errors.lua``: the exact status and body
ride in the trailers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
import orjson
from redis.asyncio import Redis

from relay_proto.relay.v1 import health_service_pb2, health_service_pb2_grpc
from relay_server.storage.postgres.pool import Database

log = logging.getLogger(__name__)


class HealthServicer(health_service_pb2_grpc.HealthServiceServicer):
    def __init__(self, db: Database, redis: Redis | None, *, timeout_s: float = 2.0) -> None:
        self._db = db
        self._redis = redis
        self._timeout = timeout_s

    async def GetLiveness(self, request, context):  # noqa: N802 (gRPC naming)
        return health_service_pb2.GetLivenessResponse(status="ok")

    async def GetReadiness(self, request, context):  # noqa: N802
        checks = {"postgres": await self._check("postgres", self._postgres)}
        checks["redis"] = await self._check("redis", self._redis_ping) if self._redis is not None else "not_configured"
        if all(v != "unavailable" for v in checks.values()):
            return health_service_pb2.GetReadinessResponse(status="ok", checks=checks)
        body = orjson.dumps({"status": "unavailable", "checks": checks}).decode()
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "not ready: " + ", ".join(k for k, v in checks.items() if v == "unavailable"),
            trailing_metadata=(("x-relay-http-status", "503"), ("x-relay-error", body)),
        )

    async def _check(self, name: str, probe: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except Exception as exc:  # noqa: BLE001 (any failure means "not ready", and is logged)
            log.warning("readiness check failed", extra={"dependency": name, "error": repr(exc)})
            return "unavailable"
        return "ok"

    async def _postgres(self) -> None:
        async with self._db.system_tx() as conn:
            await conn.execute("SELECT 1")

    async def _redis_ping(self) -> None:
        assert self._redis is not None
        await self._redis.ping()


def register_health_service(server: grpc.aio.Server, db: Database, redis: Redis | None) -> str:
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(HealthServicer(db, redis), server)
    return health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name
