"""The shared key cache and cross-worker invalidation over a real Redis.

Two ``Authenticator``s stand for two worker processes: each has its own
in-process cache (with a TTL far longer than the test, so only a purge can
explain a change), its own Redis client and its own pub/sub subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from relay_server.domain.keys import KeyRecord
from relay_server.errors import RelayError
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.stack.processes import free_port
from relay_server.stack.redis import RedisHandle, start_redis
from relay_server.storage.postgres.keys import PostgresKeyStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.client import create_redis
from relay_server.tenancy.auth_cache import RedisKeyCache, decode_record, redis_key
from relay_server.tenancy.cache_fill import is_tombstone
from relay_server.tenancy.keys import KeyRequest
from relay_server.tenancy.policy_bus import CHANNEL, PolicyBus
from tests.support.tenancy import JOBS, operator, signup, tenancy_for


def _md(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


class CountingStore(PostgresKeyStore):
    lookups = 0

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        self.lookups += 1
        return await super().find_by_hash(key_hash)


class Worker:
    """What one server process holds: caches, invalidator, subscriber task."""

    def __init__(self, db: Database, url: str) -> None:
        self.redis = create_redis(url)
        self.store = CountingStore(db)
        self.cache = RedisKeyCache(self.redis)
        self.auth = Authenticator(self.store, cache_ttl_s=3600, shared=self.cache)
        self.invalidator = PolicyBus(db, key_cache=self.cache, redis=self.redis,
                                     subscriber=lambda: Redis.from_url(url, socket_timeout=None))  # fmt: skip
        self.invalidator.register(self.auth.cache)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.invalidator.run_subscriber())
        await asyncio.wait_for(self.invalidator.subscribed.wait(), 5)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.redis.aclose()

    def caches(self, key_hash: str) -> bool:
        return key_hash in self.auth.cache


@pytest.fixture
async def workers(database: Database, redis_server: RedisHandle, redis_client: Redis) -> AsyncIterator[list[Worker]]:
    pair = [Worker(database, redis_server.url), Worker(database, redis_server.url)]
    for w in pair:
        await w.start()
    yield pair
    for w in pair:
        await w.close()


@pytest.mark.asyncio
async def test_revocation_on_one_worker_purges_every_worker_and_redis(
    database: Database, redis_client: Redis, redis_server: RedisHandle, workers: list[Worker]
) -> None:
    a, b = workers
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        s = await signup(t, "multi")
        row, secret = await t.keys.create(operator(), s.tenant.id, KeyRequest(name="k", environment="test"))
        assert (await a.auth.authenticate(_md(secret))).key_id == row.id
        assert a.store.lookups == 1
        # b finds it in Redis: no Postgres lookup.
        assert (await b.auth.authenticate(_md(secret))).key_id == row.id
        assert b.store.lookups == 0 and await redis_client.get(redis_key(row.key_hash)) not in (None, b"-")

        await t.keys.revoke(operator(), s.tenant.id, row.id)  # a third "worker" (t) makes the change
        # The call returned only once both subscribers acknowledged their purge.
        assert not a.caches(row.key_hash) and not b.caches(row.key_hash)
        for w in (a, b):
            with pytest.raises(RelayError) as info:
                await w.auth.authenticate(_md(secret))
            assert info.value.http_status == 401
        # Redis holds the fresh (revoked) record, filled after the purge; never the old one.
        assert decode_record(await redis_client.get(redis_key(row.key_hash))).status == "revoked"


@pytest.mark.asyncio
async def test_a_tenant_status_change_purges_every_key_of_the_tenant_on_every_worker(
    database: Database, redis_client: Redis, redis_server: RedisHandle, workers: list[Worker]
) -> None:
    a, b = workers
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        s = await signup(t, "suspendme")
        _other, other_secret = await t.keys.create(operator(), s.tenant.id, KeyRequest(name="k2", environment="test"))
        for w in (a, b):
            for secret in (s.first_key_secret, other_secret):
                await w.auth.authenticate(_md(secret))
        await t.tenants.transition(operator(), s.tenant.id, "active", "")
        await t.tenants.transition(operator(), s.tenant.id, "suspended", "")
        assert len(a.auth.cache) == 0 and len(b.auth.cache) == 0
        for w in (a, b):
            for secret in (s.first_key_secret, other_secret):
                with pytest.raises(RelayError) as info:
                    await w.auth.authenticate(_md(secret))
                assert info.value.http_status == 402


@pytest.mark.asyncio
async def test_a_fill_racing_a_purge_cannot_resurrect_the_old_record(database: Database, redis_client: Redis) -> None:
    cache = RedisKeyCache(redis_client)
    record = KeyRecord("key_1", "h" * 64, "hint", "ten_1", "active", "pro", "test", "inference", "active")
    found, seen = await cache.get(record.key_hash)
    assert found is None and seen is None
    await cache.put(record, seen)
    assert (await cache.get(record.key_hash))[0] == record

    stale_reader_saw = None  # looked before the purge, read Postgres before the change committed
    await cache.purge([record.key_hash])
    await cache.put(record, stale_reader_saw)
    found, tombstone = await cache.get(record.key_hash)
    assert found is None and is_tombstone(tombstone)

    # A reader that looked after the purge read fresh data: it may fill ...
    revoked = KeyRecord("key_1", "h" * 64, "hint", "ten_1", "active", "pro", "test", "inference", "revoked")
    await cache.put(revoked, tombstone)
    assert (await cache.get(record.key_hash))[0] == revoked
    # ... unless yet another purge ran during its read.
    await cache.purge([record.key_hash])
    _, second = await cache.get(record.key_hash)
    await cache.purge([record.key_hash])
    await cache.put(record, second)
    assert (await cache.get(record.key_hash))[0] is None


@pytest.mark.asyncio
async def test_a_purge_arriving_during_a_lookup_keeps_the_lookup_from_caching(database: Database, redis_client: Redis) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "racey")
    gate = asyncio.Event()

    class SlowStore(PostgresKeyStore):
        async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
            record = await super().find_by_hash(key_hash)
            await gate.wait()
            return record

    auth = Authenticator(SlowStore(database), cache_ttl_s=3600)
    lookup = asyncio.create_task(auth.authenticate(_md(s.first_key_secret)))
    await asyncio.sleep(0.05)
    auth.purge_tenant(s.tenant.id)  # the change lands while the lookup is in flight
    gate.set()
    await lookup
    assert len(auth.cache) == 0


@pytest.mark.asyncio
async def test_with_redis_down_auth_falls_back_to_postgres_and_purges_catch_up(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = start_redis(tmp_path, port)
    url = f"redis://127.0.0.1:{port}/0"
    redis = create_redis(url)
    try:
        async with tenancy_for(database, redis, redis_url=url) as t:
            s = await signup(t, "outage")
            row, secret = await t.keys.create(operator(), s.tenant.id, KeyRequest(name="k", environment="test"))
            await t.authenticator.authenticate(_md(secret))  # now in Redis too
            server.stop()

            caplog.set_level(logging.WARNING)
            fresh = Authenticator(PostgresKeyStore(database), shared=RedisKeyCache(create_redis(url)))
            assert (await fresh.authenticate(_md(secret))).key_id == row.id
            assert any("redis unavailable" in r.getMessage() for r in caplog.records)
            assert secret not in caplog.text

            # A revocation during the outage: effective locally at once, the Redis
            # purge is staged as a job and retried until Redis answers.
            await t.keys.revoke(operator(), s.tenant.id, row.id)
            with pytest.raises(RelayError):
                await t.authenticator.authenticate(_md(secret))
            async with database.system_tx() as conn:
                staged = await (await conn.execute(f"SELECT id, status FROM {JOBS} WHERE kind = 'policy_purge'")).fetchall()
                assert [j["status"] for j in staged] == ["queued"]
                await conn.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE task_name = 'policy_purge'")
            assert await t.runner.drain() == 1
            async with database.system_tx() as conn:
                failed = await (await conn.execute(f"SELECT status, attempts FROM {JOBS} WHERE kind = 'policy_purge'")).fetchone()
            assert failed == {"status": "queued", "attempts": 1}, "failed while Redis is down: queued again"

            server = start_redis(tmp_path, port)
            # A Redis that comes back with its data would still hold the old record.
            await redis.set(redis_key(row.key_hash), b"stale")
            async with database.system_tx() as conn:
                await conn.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE task_name = 'policy_purge'")
            assert await t.runner.drain() == 1
            assert is_tombstone(await redis.get(redis_key(row.key_hash)))
            async with database.system_tx() as conn:  # succeeded, so it left the queue
                assert await (await conn.execute(f"SELECT status FROM {JOBS} WHERE kind = 'policy_purge'")).fetchone() is None
    finally:
        await redis.aclose()
        server.stop()


@pytest.mark.asyncio
async def test_a_successful_purge_removes_its_staged_job(database: Database, redis_client: Redis, redis_server: RedisHandle) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        s = await signup(t, "tidy")
        row, _ = await t.keys.create(operator(), s.tenant.id, KeyRequest(name="k", environment="test"))
        await t.keys.revoke(operator(), s.tenant.id, row.id)
        async with database.system_tx() as conn:
            assert await (await conn.execute(f"SELECT id FROM {JOBS} WHERE kind = 'policy_purge'")).fetchall() == []


@pytest.mark.asyncio
async def test_a_worker_that_never_acknowledges_delays_a_change_only_up_to_the_timeout(
    database: Database, redis_client: Redis, redis_server: RedisHandle, caplog: pytest.LogCaptureFixture
) -> None:
    silent = Redis.from_url(redis_server.url)
    pubsub = silent.pubsub()
    await pubsub.subscribe(CHANNEL)  # receives, never acknowledges
    try:
        auth = Authenticator(PostgresKeyStore(database))
        invalidator = PolicyBus(database, key_cache=RedisKeyCache(redis_client), redis=redis_client, ack_timeout_s=0.1)
        invalidator.register(auth.cache)
        caplog.set_level(logging.WARNING)
        assert await invalidator.keys_changed("ten_1", ["key_1"], ["a" * 64]) is True
        assert "acknowledged" in caplog.text
    finally:
        await pubsub.aclose()
        await silent.aclose()
