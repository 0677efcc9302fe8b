"""The tenancy capability, assembled from settings and the shared resources.

``relay_server.app`` (the composition root) calls ``build_tenancy`` once and owns the
result; this keeps the tenancy wiring in one readable place without spreading
it through ``relay_server.app``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis

from relay_server.app.archive import Archive
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.settings import Settings
from relay_server.storage.postgres.keys import PostgresKeyStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.silos import DataPlane
from relay_server.storage.redis.client import create_subscriber
from relay_server.tenancy.accounts import AccountAdmin
from relay_server.tenancy.audit import AuditLog
from relay_server.tenancy.auth_cache import RedisKeyCache
from relay_server.tenancy.config import TenantConfigReader
from relay_server.tenancy.keys import ApiKeyService
from relay_server.tenancy.last_used import LastUsedRecorder
from relay_server.tenancy.lifecycle import Lifecycle
from relay_server.tenancy.members import MemberAdmin, MemberPermissions
from relay_server.tenancy.placement import PlacementReader
from relay_server.tenancy.policy_bus import LEGACY_PURGE_JOB, PURGE_JOB, PolicyBus
from relay_server.tenancy.tenant_settings import TenantSettingsAdmin
from relay_server.tenancy.tenants import PROVISION_JOB, TenantAdmin
from relay_server.tenancy.thread_browser import ThreadBrowser
from relay_server.tenancy.usage import UsageReports
from relay_server.tenancy.webhook_test import WebhookTester
from relay_server.workers.lifecycle import LifecycleJobs
from relay_server.workers.provisioning import Provisioner
from relay_server.workers.runner import BackgroundRunner, Periodic


@dataclass
class Tenancy:
    settings: Settings
    authenticator: Authenticator
    last_used: LastUsedRecorder
    invalidator: PolicyBus  # the tenant-policy invalidation bus
    config: TenantConfigReader
    lifecycle: Lifecycle
    keys: ApiKeyService
    tenants: TenantAdmin
    members: MemberAdmin
    member_permissions: MemberPermissions
    audit: AuditLog
    usage: UsageReports
    accounts: AccountAdmin
    webhook_test: WebhookTester
    tenant_settings: TenantSettingsAdmin
    thread_browser: ThreadBrowser
    lifecycle_jobs: LifecycleJobs
    runner: BackgroundRunner

    async def start(self, subscribe_timeout_s: float = 2.0) -> None:
        self.runner.start(jobs_enabled=self.settings.background_jobs)
        if self.settings.redis_url:
            # Report SERVING only once purges from other workers reach this one
            # (if Redis is down, serve anyway: the subscriber keeps retrying).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.invalidator.subscribed.wait(), subscribe_timeout_s)

    async def stop(self) -> None:
        await self.runner.stop()
        await self.last_used.flush()  # what was collected since the last flush


def _model_exists(catalog: Catalog):  # noqa: ANN202
    def exists(name: str) -> bool:
        return any(e.relay_name == name or e.model_id == name for e in catalog.entries())

    return exists


def build_tenancy(
    settings: Settings, db: Database, redis: Redis | None, catalog: Catalog, *, archive: Archive | None = None,
    plane: DataPlane | None = None,
) -> Tenancy:
    """``archive``: the request archive, read by the usage API and erased with a tenant (docs/archival.md)."""
    key_store = PostgresKeyStore(db)
    last_used = LastUsedRecorder(key_store, flush_s=settings.last_used_flush_s)
    shared = RedisKeyCache(redis, ttl_s=settings.auth_redis_ttl_s) if redis is not None else None
    authenticator = Authenticator(key_store, cache_ttl_s=settings.auth_cache_ttl_s, shared=shared, on_use=last_used.touch)

    def subscriber() -> Redis:
        # Its own connection with no read timeout: it waits for messages.
        return create_subscriber(settings.redis_url)

    invalidator = PolicyBus(db, key_cache=shared, redis=redis, subscriber=subscriber if redis is not None else None)
    config = TenantConfigReader(db, ttl_s=settings.config_cache_ttl_s)
    placement = PlacementReader(db, ttl_s=settings.config_cache_ttl_s)
    plane = plane or DataPlane(db)
    plane.bind(placement.silo)  # every data-plane store asks the plane; the plane asks this cache
    invalidator.register(authenticator.cache, config.cache, placement.cache)  # app.py registers the other capabilities' caches
    lifecycle = Lifecycle(db, invalidator, trial_days=settings.trial_days)
    model_exists = _model_exists(catalog)
    provisioner = Provisioner(db, lifecycle, invalidator)
    lifecycle_jobs = LifecycleJobs(
        db,
        lifecycle,
        suspended_grace=timedelta(days=settings.suspended_grace_days),
        expired_grace=timedelta(days=settings.expired_grace_days),
        retention=timedelta(days=settings.deletion_retention_days),
        provisioning_stuck=timedelta(seconds=settings.provisioning_stuck_s),
        archive=archive.files if archive is not None else None,
        plane=plane,
    )
    runner = BackgroundRunner(
        db,
        {PROVISION_JOB: provisioner.run, PURGE_JOB: invalidator.run_job, LEGACY_PURGE_JOB: invalidator.run_job, **lifecycle_jobs.handlers()},  # type: ignore[dict-item]
        poll_s=settings.jobs_poll_s,
        shutdown_grace_s=settings.shutdown_grace_s,
    )
    for purge in (PURGE_JOB, LEGACY_PURGE_JOB):
        runner.set_max_attempts(purge, 100)  # a purge is cheap and must happen: retry for hours
    runner.add_periodic(Periodic("lifecycle-sweep", settings.lifecycle_sweep_s, lifecycle_jobs.sweep))
    runner.add_loop("last-used-flush", last_used.run)
    if redis is not None:
        runner.add_loop("policy-invalidation", invalidator.run_subscriber)
    return Tenancy(
        settings=settings,
        authenticator=authenticator,
        last_used=last_used,
        invalidator=invalidator,
        config=config,
        lifecycle=lifecycle,
        keys=ApiKeyService(db, invalidator, model_exists=model_exists, rotation_grace_s=settings.key_rotation_grace_s),
        tenants=TenantAdmin(db, lifecycle, invalidator, wake_jobs=runner.wake),
        members=MemberAdmin(db),
        member_permissions=MemberPermissions(db),
        audit=AuditLog(db),
        usage=UsageReports(plane, redis, cold=archive.cold if archive is not None else None),
        accounts=AccountAdmin(db),
        webhook_test=WebhookTester(db),
        tenant_settings=TenantSettingsAdmin(db, invalidator, model_exists=model_exists),
        thread_browser=ThreadBrowser(db),
        lifecycle_jobs=lifecycle_jobs,
        runner=runner,
    )
