"""The composition root: the only place that builds and wires components.

``build()`` turns settings into a ready ``App`` (pools open, catalog loaded);
``serve()`` runs one gRPC worker process until SIGTERM/SIGINT, then drains
in-flight requests for ``shutdown_grace_s`` before closing the pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from redis.asyncio import Redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from relay_sdk._proto.relay.admin.v1 import (
    api_keys_pb2,
    api_keys_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from relay_sdk._proto.relay.v1 import inference_service_pb2, inference_service_pb2_grpc, openai_service_pb2, openai_service_pb2_grpc
from relay_server.api.admin_catalog import ModelCatalogServicer
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.inference_service import InferenceServicer
from relay_server.api.openai_service import OpenAIServicer
from relay_server.pipeline.authenticate import Authenticator
from relay_server.pipeline.catalog import Catalog
from relay_server.pipeline.inference import InferencePipeline
from relay_server.pipeline.meter import LogRecorder
from relay_server.pipeline.route import Router
from relay_server.providers.testmode import TestModeProvider
from relay_server.settings import Settings
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.keys import PostgresKeyStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.client import create_redis

log = logging.getLogger(__name__)

# Services whose implementation arrives with later capabilities: registered with
# their generated base class, which answers UNIMPLEMENTED (never a fake success).
_PENDING_ADMIN = (
    (tenants_pb2, "TenantService", tenants_pb2_grpc.add_TenantServiceServicer_to_server, tenants_pb2_grpc.TenantServiceServicer),
    (api_keys_pb2, "ApiKeyService", api_keys_pb2_grpc.add_ApiKeyServiceServicer_to_server, api_keys_pb2_grpc.ApiKeyServiceServicer),
    (
        credentials_pb2,
        "ProviderCredentialService",
        credentials_pb2_grpc.add_ProviderCredentialServiceServicer_to_server,
        credentials_pb2_grpc.ProviderCredentialServiceServicer,
    ),
    (usage_pb2, "UsageService", usage_pb2_grpc.add_UsageServiceServicer_to_server, usage_pb2_grpc.UsageServiceServicer),
    (audit_pb2, "AuditLogService", audit_pb2_grpc.add_AuditLogServiceServicer_to_server, audit_pb2_grpc.AuditLogServiceServicer),
)


def _service_name(module, name: str) -> str:
    return module.DESCRIPTOR.services_by_name[name].full_name


@dataclass
class App:
    settings: Settings
    db: Database
    redis: Redis | None
    catalog: Catalog
    authenticator: Authenticator
    pipeline: InferencePipeline

    async def close(self) -> None:
        await self.catalog.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()


async def build(settings: Settings) -> App:
    db = Database(settings.database_url, settings.app_database_url or None, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    await db.open()
    redis = create_redis(settings.redis_url) if settings.redis_url else None
    catalog = Catalog(PostgresCatalogStore(db))
    await catalog.load()
    catalog.start()
    authenticator = Authenticator(PostgresKeyStore(db), cache_ttl_s=settings.auth_cache_ttl_s)
    router = Router(TestModeProvider(), timeout_s=settings.provider_timeout_s)
    pipeline = InferencePipeline(authenticator, catalog, router, LogRecorder())
    return App(settings, db, redis, catalog, authenticator, pipeline)


def add_services(server: grpc.aio.Server, app: App) -> list[str]:
    """Register every servicer; returns the fully-qualified service names."""
    openai_service_pb2_grpc.add_OpenAIServiceServicer_to_server(
        OpenAIServicer(app.pipeline, app.authenticator, app.catalog), server
    )
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(app.pipeline), server)
    admin_auth = AdminAuthenticator(app.settings.admin_token)
    catalog_pb2_grpc.add_ModelCatalogServiceServicer_to_server(ModelCatalogServicer(admin_auth, app.catalog), server)
    names = [
        _service_name(openai_service_pb2, "OpenAIService"),
        _service_name(inference_service_pb2, "InferenceService"),
        _service_name(catalog_pb2, "ModelCatalogService"),
    ]
    for module, name, add, base in _PENDING_ADMIN:
        add(base(), server)
        names.append(_service_name(module, name))
    return names


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.max_request_bytes + 1024 * 1024  # room for framing around the largest body
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1),  # --workers N processes share one port
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    app = await build(settings)
    server = grpc.aio.server(options=grpc_options(settings))
    names = add_services(server, app)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    server.add_insecure_port(settings.grpc_address)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("relay worker serving", extra={"address": settings.grpc_address})

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("relay worker draining", extra={"grace_s": settings.shutdown_grace_s})
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    await app.close()
