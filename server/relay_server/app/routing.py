"""The routing capability, assembled from settings and the shared resources.

``relay_server.app`` calls ``build_routing`` once: it opens the shared outbound HTTP
client, loads the provider directory, and returns the live ``Router`` plus
the credential vault the admin API uses; the health monitor, the provider
event log's flush loop and retention sweep, and (when the keyring holds
retired master keys) the re-wrap job are registered on the process's
``BackgroundRunner``.  ``stop`` closes what ``build_routing`` opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from relay_server.crypto.keyring import Keyring
from relay_server.observability.anomaly import AnomalyAwareStatuses, AnomalyDetector
from relay_server.observability.provider_events import ProviderEventLog
from relay_server.pipeline.routing.candidates import CandidatePlanner, OutboundGuard
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.credential_cache import CredentialCache
from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker
from relay_server.pipeline.routing.latency import RouteLatency
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.pipeline.routing.route import RetryPolicy, Router
from relay_server.pipeline.routing.virtual_models import VirtualModels
from relay_server.providers.testmode import TestModeProvider
from relay_server.providers.upstream_http import UpstreamHttp, build_upstream_http
from relay_server.settings import Settings
from relay_server.storage.postgres.credentials import PostgresCredentialSource
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.provider_events import PostgresProviderEvents
from relay_server.storage.postgres.providers import PostgresProviderStore
from relay_server.storage.postgres.virtual_models import PostgresVirtualModelStore
from relay_server.storage.redis.health import RedisHealthStore
from relay_server.storage.redis.outbound import OutboundWindows
from relay_server.storage.redis.route_latency import RedisRouteLatency
from relay_server.storage.redis.wire import Wire
from relay_server.tenancy.vault import CredentialVault
from relay_server.workers.credential_rotation import rotate_in_background
from relay_server.workers.health_monitor import HealthMonitor
from relay_server.workers.runner import BackgroundRunner, Periodic


@dataclass
class Routing:
    router: Router
    vault: CredentialVault
    client: UpstreamHttp
    directory: ProviderDirectory
    credentials: CredentialCache
    health: HealthTracker
    monitor: HealthMonitor
    keyring: Keyring | None
    virtual: VirtualModels
    latency: RouteLatency
    events: ProviderEventLog

    async def stop(self) -> None:
        await self.health.close()  # the attempt samples still buffered
        await self.events.close()  # and the provider events
        await self.latency.close()
        await self.virtual.stop()
        await self.directory.stop()
        await self.client.close()


async def build_routing(
    settings: Settings,
    db: Database,
    redis: Redis | None,
    wire: Wire | None,
    catalog: Catalog,
    runner: BackgroundRunner | None,
    *,
    anomalies: AnomalyDetector | None = None,
    on_credentials_change: Callable[[str | None], object] | None = None,
) -> Routing:
    keyring = Keyring.parse(settings.master_key, settings.old_master_keys)
    client = build_upstream_http(settings)  # native or aiohttp, proxy from settings
    client = build_upstream_http(settings, allow_private=settings.private_destinations_allowed)  # native or aiohttp, proxy from settings
    try:
        directory = ProviderDirectory(PostgresProviderStore(db), client)
        await directory.load()
    except BaseException:
        await client.close()
        raise
    directory.start()
    virtual = VirtualModels(PostgresVirtualModelStore(db))
    await virtual.load()
    virtual.start()
    latency = RouteLatency(RedisRouteLatency(redis) if redis is not None else None)
    source = PostgresCredentialSource(db)
    credentials = CredentialCache(source.routable, ttl_s=settings.credential_cache_ttl_s)
    event_store = PostgresProviderEvents(db)
    events = ProviderEventLog(event_store)
    health = HealthTracker(
        RedisHealthStore(redis) if redis is not None else None,
        CircuitPolicy(settings.circuit_failure_threshold, settings.circuit_cooldown_s),
        events=events,
    )
    planner = CandidatePlanner(
        catalog, directory, credentials, health,
        OutboundGuard(OutboundWindows(redis, wire=wire) if redis is not None else None), keyring,
        policy=RetryPolicy(backoff_s=settings.retry_backoff_s), timeout_s=settings.provider_timeout_s,
        state_reads=wire if redis is not None else None, virtual=virtual, latency=latency,
    )  # fmt: skip
    router = Router(TestModeProvider(chunk_delay_s=settings.testmode_chunk_delay_s), planner, timeout_s=settings.provider_timeout_s)
    # The invalidation bus when there is one: every worker drops the entry, not only this one.
    vault = CredentialVault(db, keyring, on_change=on_credentials_change or credentials.invalidate)
    # With a detector, a probe's "healthy" does not overrule a live latency/error-rate anomaly.
    statuses = PostgresProviderStore(db)
    monitor = HealthMonitor(
        directory, health, statuses if anomalies is None else AnomalyAwareStatuses(statuses, anomalies),
        source.pooled, keyring, interval_s=settings.health_probe_interval_s, events=events,
    )  # fmt: skip
    if runner is not None:
        runner.add_loop("provider-events", events.run)
        retention = timedelta(days=settings.provider_events_retention_days)

        async def purge_events() -> int:
            return await event_store.purge(datetime.now(UTC) - retention)

        runner.add_periodic(Periodic("provider-events-retention", 3600.0, purge_events))
        if settings.health_monitor:
            runner.add_periodic(Periodic("provider-health", settings.health_probe_interval_s, monitor.tick))
        if keyring is not None and keyring.retired_ids:
            runner.add_loop("credential-rotation", lambda: rotate_in_background(db, keyring))
    return Routing(router, vault, client, directory, credentials, health, monitor, keyring, virtual, latency, events)
