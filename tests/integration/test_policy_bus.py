"""The invalidation bus over a real Redis and Postgres: two "workers" (each its
own policy caches, Redis client and subscriber) and a third that makes the
change through the admin services.  TTLs are far longer than the test, so only
the bus can explain a change being seen; nothing waits after the admin call."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from relay_server.crypto.keyring import Keyring
from relay_server.domain.request import Principal
from relay_server.pipeline.routing.credential_cache import CredentialCache
from relay_server.pipeline.steps.limits import LimitResolver
from relay_server.pipeline.steps.spend import TenantMeteringConfig
from relay_server.pipeline.steps.tenant_flags import PostgresTenantFlags
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres.credentials import PostgresCredentialSource
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.quotas import (
    PostgresQuotaStore,
    PostgresTenantConfig,
)
from relay_server.storage.redis.client import create_redis
from relay_server.tenancy.policy_bus import PolicyBus
from relay_server.tenancy.vault import CredentialSpec, CredentialVault
from tests.support.tenancy import operator, signup, tenancy_for

HOUR = 3600.0


class Worker:
    def __init__(self, db: Database, url: str) -> None:
        self.redis = create_redis(url)
        self.bus = PolicyBus(db, redis=self.redis, subscriber=lambda: Redis.from_url(url, socket_timeout=None))
        self.credentials = CredentialCache(PostgresCredentialSource(db).routable, ttl_s=HOUR)
        self.limits = LimitResolver(PostgresQuotaStore(db), ttl_s=HOUR)
        self.metering = TenantMeteringConfig(PostgresTenantConfig(db), ttl_s=HOUR)
        self.flags = PostgresTenantFlags(db, ttl_s=HOUR)
        self.bus.register(self.credentials.cache, self.metering.cache, self.flags.cache, *self.limits.caches())
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.bus.run_subscriber())
        await asyncio.wait_for(self.bus.subscribed.wait(), 5)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.redis.aclose()


@pytest.fixture
async def workers(database: Database, redis_server: RedisHandle) -> AsyncIterator[list[Worker]]:
    pair = [Worker(database, redis_server.url), Worker(database, redis_server.url)]
    for w in pair:
        await w.start()
    yield pair
    for w in pair:
        await w.close()


def _principal(tenant_id: str, plan: str) -> Principal:
    return Principal(tenant_id=tenant_id, key_id="key_none", key_hint="xxxx", environment="test", scope="inference",
                     tenant_plan=plan)  # fmt: skip


@pytest.mark.asyncio
async def test_config_and_feature_changes_reach_every_worker(
    database: Database, redis_client: Redis, redis_server: RedisHandle, workers: list[Worker]
) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        tid = (await signup(t, "busconf", plan="pro")).tenant.id
        for w in workers:
            assert await w.metering.markup_rate(tid) == Decimal("0.2000")
            assert await w.metering.tenant_spend_cap(tid) is None
            assert (await w.flags.flags(tid)).default_cache_ttl_s == 0
            assert (await w.flags.flags(tid)).semantic_cache
        await t.tenant_settings.update_config(
            operator(), tid, {"markup_rate": "0.5", "spend_cap_usd": "10", "spend_cap_window": "daily", "default_cache_ttl_sec": "60"}
        )
        await t.tenant_settings.set_override(operator(), tid, "semantic_cache", False, "test", None)
        for w in workers:
            assert await w.metering.markup_rate(tid) == Decimal("0.5000")
            assert await w.metering.tenant_spend_cap(tid) == (10_000_000, "daily")
            flags = await w.flags.flags(tid)
            assert flags.default_cache_ttl_s == 60 and not flags.semantic_cache


@pytest.mark.asyncio
async def test_a_plan_change_reaches_every_workers_quotas(
    database: Database, redis_client: Redis, redis_server: RedisHandle, workers: list[Worker]
) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        tid = (await signup(t, "busplan", plan="free")).tenant.id
        for w in workers:
            assert ("rpm", 60) in {(x.resource, x.value) for x in await w.limits.limits(_principal(tid, "free"))}
        async with database.system_tx() as conn:  # written behind the admin API's back: not announced ...
            await conn.execute(
                "INSERT INTO quota_overrides (id, tenant_id, resource, time_window, limit_value) "
                "VALUES ('qo_bus', %s, 'rpm', 'per_minute', 7)", (tid,),
            )  # fmt: skip
        for w in workers:  # ... so every worker still has the plan's 60 (only the bus explains what follows)
            assert ("rpm", 60) in {(x.resource, x.value) for x in await w.limits.limits(_principal(tid, "free"))}
        await t.tenants.update(operator(), tid, {"plan": "starter"})  # a tenant change: overrides reloaded too
        for w in workers:
            limits = {x.resource: x.value for x in await w.limits.limits(_principal(tid, "starter"))}
            assert limits == {"rpm": 7, "tpm": 400000, "requests_per_day": 50000}


@pytest.mark.asyncio
async def test_a_new_or_disabled_provider_credential_reaches_every_worker(
    database: Database, redis_client: Redis, redis_server: RedisHandle, workers: list[Worker]
) -> None:
    keyring = Keyring.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}", "")
    assert keyring is not None
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        tid = (await signup(t, "buscred", plan="enterprise")).tenant.id
        vault = CredentialVault(database, keyring, on_change=t.invalidator.credentials_changed)
        for w in workers:
            assert await w.credentials.for_tenant(tid) == []
        row = await vault.create(operator(), tid, CredentialSpec("openai", name="byok"), "sk-byok-" + "x" * 24)
        for w in workers:
            assert [c.id for c in await w.credentials.for_tenant(tid)] == [row.id]
        pooled = await vault.create(operator(), "", CredentialSpec("openai", name="pool"), "sk-pool-" + "y" * 24)
        for w in workers:  # a pooled key is every tenant's
            assert {c.id for c in await w.credentials.for_tenant(tid)} == {row.id, pooled.id}
        await vault.disable(operator(), tid, row.id)
        for w in workers:
            assert [c.id for c in await w.credentials.for_tenant(tid)] == [pooled.id]
