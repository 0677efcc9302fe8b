"""The metering capability, assembled from settings and the shared resources.

``relay_server.app`` calls ``build_metering`` once: it returns the admission gate and
request recorder the pipeline uses, and registers the background loops
(usage rollup, billing, webhook delivery, noisy-neighbour detection) on the
process's ``BackgroundRunner``.  ``start`` / ``stop`` run the request-log
writer, whose ``stop`` writes (or spools) every row still queued.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict
from redis.asyncio import Redis

from relay_server.pipeline.inference import UsagePolicy
from relay_server.pipeline.steps.admission import AdmissionGate
from relay_server.pipeline.steps.limits import LimitResolver
from relay_server.pipeline.steps.meter import RequestLogRecorder
from relay_server.pipeline.steps.noisy import NoisyNeighbours
from relay_server.pipeline.steps.spend import TenantMeteringConfig
from relay_server.settings import Settings
from relay_server.storage.postgres.billing import BillingStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.quotas import PostgresQuotaStore, PostgresTenantConfig
from relay_server.storage.postgres.request_log import RequestLogStore, RequestLogWriter
from relay_server.storage.postgres.silos import DataPlane
from relay_server.storage.postgres.usage import PostgresSpendLedger, UsageRollupStore
from relay_server.storage.postgres.webhooks import PostgresEvents, WebhookStore
from relay_server.storage.redis.limits import RedisAdmission
from relay_server.storage.redis.spend import RedisSpend
from relay_server.storage.redis.wire import Wire
from relay_server.storage.spool import Spool
from relay_server.workers.billing import BillingWorker
from relay_server.workers.rollup import UsageRollup
from relay_server.workers.runner import BackgroundRunner, Periodic
from relay_server.workers.webhooks import WebhookDispatcher

_ATTEMPTS = 3  # the router's attempts per request: a reservation must outlive all of them


@dataclass
class Metering:
    gate: AdmissionGate
    recorder: RequestLogRecorder
    writer: RequestLogWriter
    tenant_config: TenantMeteringConfig
    limits: LimitResolver
    usage_policy: UsagePolicy
    rollup: UsageRollup
    billing: BillingWorker
    webhooks: WebhookDispatcher
    noisy: NoisyNeighbours | None

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self) -> None:
        await self.gate.drain()
        await self.writer.stop()
        await self.webhooks.close()


def spool_dir(settings: Settings) -> Path:
    """One spool per database, so processes of another deployment never replay into this one."""
    info = conninfo_to_dict(settings.database_url)
    identity = f"{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
    return settings.state_dir / "spool" / hashlib.sha256(identity.encode()).hexdigest()[:12]


def build_metering(
    settings: Settings, db: Database, redis: Redis | None, wire: Wire | None, runner: BackgroundRunner | None,
    *, plane: DataPlane | None = None,
) -> Metering:
    data = plane or DataPlane(db)  # the request log, usage and billing follow each tenant's placement
    events = PostgresEvents(db)
    limits = LimitResolver(PostgresQuotaStore(db), ttl_s=settings.policy_cache_ttl_s)
    tenant_config = TenantMeteringConfig(PostgresTenantConfig(db), ttl_s=settings.policy_cache_ttl_s)
    noisy = None
    if redis is not None:
        noisy = NoisyNeighbours(
            redis,
            events,
            threshold=settings.noisy_share_threshold,
            min_requests=settings.noisy_min_requests,
            factor=settings.noisy_limit_factor,
            duration_s=settings.noisy_duration_s,
        )
    gate = AdmissionGate(
        redis=RedisAdmission(wire) if wire is not None else None,
        spend=RedisSpend(redis) if redis is not None else None,
        limits=limits,
        tenant_caps=tenant_config,
        ledger=PostgresSpendLedger(data),
        events=events,
        traffic=noisy,
        fail_closed=settings.spend_cap_fail_closed,
        lease_s=settings.provider_timeout_s * _ATTEMPTS + 60,
        input_margin=settings.reservation_input_margin,
        upgrade_url=settings.billing_url,
    )
    writer = RequestLogWriter(
        RequestLogStore(data),
        Spool(spool_dir(settings)),
        batch_size=settings.request_log_batch,
        flush_s=settings.request_log_flush_s,
        replay_s=settings.spool_replay_s,
    )
    metering = Metering(
        gate=gate,
        recorder=RequestLogRecorder(writer),
        writer=writer,
        tenant_config=tenant_config,
        limits=limits,
        usage_policy=UsagePolicy(settings.usage_discrepancy_ratio, settings.usage_discrepancy_slack_tokens),
        rollup=UsageRollup(UsageRollupStore(data)),
        billing=BillingWorker(BillingStore(data), finalize_delay=timedelta(seconds=settings.billing_finalize_delay_s)),
        webhooks=WebhookDispatcher(
            WebhookStore(db),
            signing_key=settings.webhook_signing_key,
            max_attempts=settings.webhook_max_attempts,
            allow_private=settings.private_destinations_allowed,
        ),
        noisy=noisy,
    )
    if runner is not None and settings.metering_workers:
        runner.add_periodic(Periodic("usage-rollup", settings.rollup_interval_s, metering.rollup.run_once))
        runner.add_periodic(Periodic("billing", settings.billing_interval_s, metering.billing.run_once))
        runner.add_periodic(Periodic("webhook-delivery", settings.webhook_poll_s, metering.webhooks.run_once))
    if runner is not None and noisy is not None:
        runner.add_loop("noisy-neighbours", noisy.run)
    return metering
