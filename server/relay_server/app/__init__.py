"""The composition root: the only place that builds and wires components.

``build()`` turns settings into a ready ``App`` (pools open, catalog loaded);
``serve()`` runs one gRPC worker process until SIGTERM/SIGINT, then drains
in-flight requests for ``shutdown_grace_s`` before closing the pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc
from relay_proto.relay.v1 import (
    anthropic_service_pb2,
    anthropic_service_pb2_grpc,
    inference_service_pb2,
    inference_service_pb2_grpc,
    openai_service_pb2,
    openai_service_pb2_grpc,
    responses_pb2,
    responses_pb2_grpc,
)
from relay_server.api.admin_catalog import ModelCatalogServicer
from relay_server.api.admin_credentials import register_credential_service
from relay_server.api.admin_plans import register_plan_service
from relay_server.api.admin_registry import admin_authenticator, register_admin_services
from relay_server.api.admin_routing import register_routing_service
from relay_server.api.admin_usage import register_usage_service
from relay_server.api.anthropic_service import AnthropicServicer
from relay_server.api.health_service import register_health_service
from relay_server.api.inference_service import InferenceServicer
from relay_server.api.openai_service import OpenAIServicer
from relay_server.api.openai_wire import validate
from relay_server.api.reflection import enable_reflection
from relay_server.api.request_guard import GuardedServer
from relay_server.api.responses_service import ResponsesServicer
from relay_server.api.thread_service import register_thread_service
from relay_server.app.archive import Archive, build_archive, register_archiver
from relay_server.app.metering import Metering, build_metering, spool_dir
from relay_server.app.observability import Observability, build_observability
from relay_server.app.routing import Routing, build_routing
from relay_server.app.silos import build_data_plane
from relay_server.app.tenancy import Tenancy, build_tenancy
from relay_server.app.threads import Conversations, build_conversations
from relay_server.catalog.admin import CatalogAdmin
from relay_server.catalog.provider_admin import ProviderAdmin
from relay_server.catalog.provider_events import ProviderEventReader
from relay_server.catalog.routing_admin import RoutingAdmin
from relay_server.catalog.sync import CatalogSync
from relay_server.observability.admin_spans import admin_interceptors
from relay_server.observability.sampler import Sources
from relay_server.pipeline.guardrails.classifier import ClassifierClient
from relay_server.pipeline.guardrails.policy import GuardrailSource
from relay_server.pipeline.guardrails.step import Guardrails
from relay_server.pipeline.inference import InferencePipeline
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.model_names import ModelNames
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.responses.service import (
    SWEEP_INTERVAL_S,
    ResponseStore,
    RetentionSource,
)
from relay_server.settings import Settings
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import PostgresProviderStore
from relay_server.storage.postgres.silos import DataPlane
from relay_server.storage.redis.client import create_redis, create_subscriber
from relay_server.storage.redis.cluster_wire import create_wire
from relay_server.storage.redis.wire import Wire
from relay_server.tenancy.plan_admin import PlanAdmin
from relay_server.workers.runner import Periodic

log = logging.getLogger(__name__)

def _service_name(module, name: str) -> str:
    return module.DESCRIPTOR.services_by_name[name].full_name


@dataclass
class App:
    settings: Settings
    db: Database
    redis: Redis | None
    wire: Wire | None  # the per-request Redis connection (storage/redis/wire.py, cluster_wire.py)
    catalog: Catalog
    authenticator: Authenticator
    pipeline: InferencePipeline
    tenancy: Tenancy
    metering: Metering
    routing: Routing
    catalog_sync: CatalogSync
    conversations: Conversations | None = None  # response cache and threads
    observability: Observability | None = None  # metrics, traces, provider anomalies
    responses: ResponseStore | None = None  # stored Responses API turns (docs/responses.md)
    archive: Archive | None = None  # cold request history (docs/archival.md)
    plane: DataPlane | None = None  # the pool and the silos (docs/tenancy.md, "Placement")

    async def close(self) -> None:
        if self.responses is not None:
            await self.responses.close(self.settings.shutdown_grace_s)  # background responses finish or are cancelled
        if self.conversations is not None:
            await self.conversations.stop()  # thread replies finish (or are persisted as interrupted) first
        await self.pipeline.drain()  # requests that ended are metered and settled before the writer stops
        await self.pipeline.close()
        await self.metering.stop()  # writes (or spools) the request rows still queued
        if self.observability is not None:
            await self.observability.stop()  # after the writer: the last sample sees its final counts
        await self.routing.stop()
        await self.tenancy.stop()
        await self.catalog.stop()
        if self.wire is not None:
            await self.wire.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.plane is not None:
            await self.plane.close()
        await self.db.close()


async def build(settings: Settings) -> App:
    db = Database(
        settings.database_url, settings.app_database_url or None, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
        transaction_pooling=settings.db_transaction_pooling,
    )  # fmt: skip
    await db.open()
    plane = build_data_plane(settings, db)
    await plane.open()
    redis = create_redis(settings.redis_url) if settings.redis_url else None
    wire = create_wire(settings.redis_url) if settings.redis_url else None
    catalog = Catalog(PostgresCatalogStore(db))
    await catalog.load()
    catalog.start()
    observability = build_observability(settings)
    archive = build_archive(settings, db, observability.metrics)
    tenancy = build_tenancy(settings, db, redis, catalog, archive=archive, plane=plane)
    register_archiver(settings, archive, tenancy.runner)
    authenticator = tenancy.authenticator
    bus = tenancy.invalidator
    routing = await build_routing(
        settings, db, redis, wire, catalog, tenancy.runner, anomalies=observability.detector,
        on_credentials_change=bus.credentials_changed,
    )  # fmt: skip
    catalog_sync = _catalog_sync(settings, redis, catalog, routing, tenancy)
    router = routing.router
    metering = build_metering(settings, db, redis, wire, tenancy.runner, plane=plane)
    conversations = build_conversations(settings, db, redis, tenancy.runner)
    # Every tenant-policy cache is emptied by the one invalidation bus (tenancy/policy_bus.py).
    bus.register(routing.credentials.cache, metering.tenant_config.cache, *metering.limits.caches(), conversations.flags.cache)
    pipeline = InferencePipeline(
        authenticator, catalog, router, observability.recorder(metering.recorder),
        gate=metering.gate, markups=metering.tenant_config, usage_policy=metering.usage_policy,
        cache=conversations.cache, settle_after_response=True, resolver=ModelResolver(catalog, routing.virtual),
        guardrails=Guardrails(
            GuardrailSource(metering.tenant_config), ClassifierClient(allow_private=settings.private_destinations_allowed)
        ),
    )  # fmt: skip
    conversations.bind(pipeline, authenticator=authenticator, validate_chat=lambda body: validate("chat", body))
    responses = ResponseStore(db, RetentionSource(tenancy.config.get))
    tenancy.runner.add_periodic(Periodic("responses-retention", SWEEP_INTERVAL_S, responses.sweep))
    await metering.start()
    return App(
        settings, db, redis, wire, catalog, authenticator, pipeline, tenancy, metering, routing, catalog_sync,
        conversations=conversations, observability=observability, responses=responses, archive=archive,
        plane=plane,
    )  # fmt: skip


def _postgres_probe(db: Database):  # noqa: ANN202
    async def ping() -> None:
        async with db.system_tx() as conn:
            await conn.execute("SELECT 1")

    return ping


def _catalog_sync(settings: Settings, redis: Redis | None, catalog: Catalog, routing: Routing, tenancy: Tenancy) -> CatalogSync:
    """Catalog changes reach every worker: reload the catalog and the provider directory on each."""

    def subscriber() -> Redis:
        # Its own connection with no read timeout: it waits for messages.
        return create_subscriber(settings.redis_url)

    sync = CatalogSync(
        [catalog.load, routing.directory.load, routing.virtual.load], redis=redis, subscriber=subscriber if redis is not None else None
    )
    if redis is not None:
        tenancy.runner.add_loop("catalog-sync", sync.run_subscriber)
    return sync


def start_observability(app: App) -> None:
    """Sample the request log, spool, circuits and gate; record provider anomalies; serve /metrics."""
    if app.observability is None:
        return
    sources = Sources(
        gate=app.metering.gate, writer=app.metering.writer, spool_dir=spool_dir(app.settings),
        health=app.routing.health, provider_ids=lambda: [p.id for p in app.routing.directory.routable_providers()],
        policy_caches=app.tenancy.invalidator.caches,
    )  # fmt: skip
    app.observability.start(sources, PostgresProviderStore(app.db), app.routing.events)


def add_services(server: grpc.aio.Server, app: App) -> list[str]:
    """Register every servicer; returns the fully-qualified service names."""
    models = ModelNames(app.catalog, app.routing.virtual)  # what the model lists show: catalog + virtual models
    openai_service_pb2_grpc.add_OpenAIServiceServicer_to_server(
        OpenAIServicer(app.pipeline, app.authenticator, models, observability=app.observability), server
    )
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(app.pipeline, observability=app.observability), server
    )
    anthropic_service_pb2_grpc.add_AnthropicServiceServicer_to_server(
        AnthropicServicer(app.pipeline, app.authenticator, models, observability=app.observability), server
    )
    if app.responses is not None:
        responses_pb2_grpc.add_ResponsesServiceServicer_to_server(
            ResponsesServicer(app.pipeline, app.authenticator, models, app.responses, observability=app.observability), server
        )
    catalog_admin = CatalogAdmin(app.db, app.catalog_sync, app.routing.health)
    catalog_pb2_grpc.add_ModelCatalogServiceServicer_to_server(
        ModelCatalogServicer(
            admin_authenticator(app), catalog_admin, ProviderAdmin(app.db, app.catalog_sync), ProviderEventReader(app.db)
        ),
        server,
    )
    names = [
        _service_name(openai_service_pb2, "OpenAIService"),
        _service_name(inference_service_pb2, "InferenceService"),
        _service_name(anthropic_service_pb2, "AnthropicService"),
        _service_name(catalog_pb2, "ModelCatalogService"),
    ]
    if app.responses is not None:
        names.append(_service_name(responses_pb2, "ResponsesService"))
    names.append(register_routing_service(server, admin_authenticator(app), RoutingAdmin(app.db, app.catalog_sync)))
    names.append(register_plan_service(server, admin_authenticator(app), PlanAdmin(app.db, app.tenancy.invalidator)))
    names.extend(register_admin_services(server, app))
    names.append(register_usage_service(server, app))
    names.append(register_credential_service(server, app))
    names.append(register_thread_service(server, app.conversations.threads if app.conversations else None))
    names.append(register_health_service(server, _postgres_probe(app.db), app.redis.ping if app.redis is not None else None))
    return names


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.max_request_bytes + 1024 * 1024  # room for framing around the largest body
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Envoy accepts 60 KiB of request headers and adds its own (x-envoy-original-path
        # repeats the path): gRPC's 16 KiB default turned a long URL into a 429.
        ("grpc.max_metadata_size", 128 * 1024),
        ("grpc.absolute_max_metadata_size", 160 * 1024),
        ("grpc.so_reuseport", 1),  # --workers N processes share one port
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def freeze_startup_heap() -> None:
    """Hide what start-up built (catalog, descriptors, tokenizers, pools) from the cyclic GC.

    It lives as long as the worker, yet every full collection walked it (~88,000
    objects, 14–32 ms per collection, a latency spike for every request in flight).
    After ``gc.freeze()`` a full collection scans only what requests left behind
    (~1,300 objects in a streaming bench).
    """
    gc.collect()
    gc.freeze()


# Allocations (net of frees) between two collections of the youngest generation; CPython's default is 700.
YOUNG_GC_THRESHOLD = 10_000


def relax_young_gc() -> None:
    """Collect the youngest generation every 10,000 net allocations instead of every 700.

    A request's objects (its context, futures, coroutines, the dicts of its body and answer)
    live for milliseconds; with 32 requests in flight, a collection every 700 allocations found
    thousands of them alive, walked them and promoted them, and the next generations walked
    them again.  Waiting longer lets most of them die by reference count first: ≈ 7 % of the
    worker's CPU per request in process (bench/README.md, round 12), flat from 10,000 on.
    Only cyclic garbage waits longer, and it is rare on the request path.
    """
    _young, *older = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *older)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    app = await build(settings)
    tracing = app.observability.tracing if app.observability is not None else None
    server: Any = GuardedServer(grpc.aio.server(options=grpc_options(settings), interceptors=admin_interceptors(tracing)))
    names = add_services(server, app)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection([*names, health.SERVICE_NAME], server)
    server.add_insecure_port(settings.grpc_address)
    await server.start()
    await app.tenancy.start()
    if app.redis is not None:  # SERVING only once catalog changes from other workers reach this one
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(app.catalog_sync.subscribed.wait(), 2.0)
    start_observability(app)
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    freeze_startup_heap()
    relax_young_gc()
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
