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

from relay_proto.relay.v1 import health_service_pb2, health_service_pb2_grpc

log = logging.getLogger(__name__)


Probe = Callable[[], Awaitable[object]]


class HealthServicer(health_service_pb2_grpc.HealthServiceServicer):
    def __init__(self, postgres: Probe, redis: Probe | None, *, timeout_s: float = 2.0) -> None:
        self._postgres = postgres  # app/__init__.py: SELECT 1 on the system pool
        self._redis = redis  # PING; None without REDIS_URL
        self._timeout = timeout_s

    async def GetLiveness(self, request, context):  # noqa: N802 (gRPC naming)
        return health_service_pb2.GetLivenessResponse(status="ok")

    async def GetReadiness(self, request, context):  # noqa: N802
        checks = {"postgres": await self._check("postgres", self._postgres)}
        checks["redis"] = await self._check("redis", self._redis) if self._redis is not None else "not_configured"
        if all(v != "unavailable" for v in checks.values()):
            return health_service_pb2.GetReadinessResponse(status="ok", checks=checks)
        body = orjson.dumps({"status": "unavailable", "checks": checks}).decode()
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "not ready: " + ", ".join(k for k, v in checks.items() if v == "unavailable"),
            trailing_metadata=(("x-relay-http-status", "503"), ("x-relay-error", body)),
        )

    async def _check(self, name: str, probe: Probe) -> str:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except Exception as exc:  # noqa: BLE001 (any failure means "not ready", and is logged)
            log.warning("readiness check failed", extra={"dependency": name, "error": repr(exc)})
            return "unavailable"
        return "ok"



def register_health_service(server: grpc.aio.Server, postgres: Probe, redis: Probe | None) -> str:
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(HealthServicer(postgres, redis), server)
    return health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name
