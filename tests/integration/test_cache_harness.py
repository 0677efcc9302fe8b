"""Shared set-up for the response cache and threads tests (holds no tests itself).

A real pipeline over the test database and Redis: the Postgres key store and
catalog, the test-mode provider wrapped in a call counter, the response cache
with its Postgres flags, and a recorder that keeps every metered record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from redis.asyncio import Redis

from relay_server.domain.keys import mint_key
from relay_server.domain.metered import Metered
from relay_server.domain.provider import ProviderCall
from relay_server.domain.request import new_request_id
from relay_server.pipeline.inference import InferencePipeline
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.route import Router
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.pipeline.steps.cache import ResponseCache
from relay_server.pipeline.steps.embedder import EMBEDDING_DIMS, Embedder, PipelineEmbedder
from relay_server.pipeline.steps.tenant_flags import PostgresTenantFlags
from relay_server.providers.testmode import TestModeProvider
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.demo import seed_demo
from relay_server.storage.postgres.keys import PostgresKeyStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.response_cache import RedisResponseCache


class CountingProvider:
    """The test-mode provider, counting the calls that reach it."""

    name = "test"

    def __init__(self, chunk_delay_s: float = 0.0) -> None:
        self._inner = TestModeProvider(chunk_delay_s)
        self.calls: list[str] = []
        self.bodies: list[Mapping[str, Any]] = []

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        self.calls.append("complete")
        self.bodies.append(call.body)
        return await self._inner.complete(call)

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        self.calls.append("stream")
        self.bodies.append(call.body)
        async for chunk in self._inner.stream(call):
            yield chunk

    async def embed(self, call: ProviderCall) -> dict[str, Any]:
        self.calls.append("embed")
        return await self._inner.embed(call)

    def count(self, kind: str) -> int:
        return self.calls.count(kind)


class Capture:
    """A request recorder that keeps the records."""

    def __init__(self) -> None:
        self.records: list[Metered] = []

    def record(self, metered: Metered) -> None:
        self.records.append(metered)

    def of(self, request_id: str) -> Metered:
        return next(r for r in self.records if r.ctx.request_id == request_id)


class CraftedEmbedder:
    """Vectors chosen by the test: text → unit vector given as (cos to e1, sin on e2)."""

    def __init__(self, angles: Mapping[str, float]) -> None:
        self._angles = dict(angles)
        self.calls: list[str] = []

    async def embed(self, metadata: Mapping[str, str], model: str, text: str) -> list[float] | None:
        self.calls.append(text)
        if text not in self._angles:
            return None
        cos = self._angles[text]
        vector = [0.0] * EMBEDDING_DIMS
        vector[0], vector[1] = cos, (1 - cos * cos) ** 0.5
        return vector


def add_tenant(owner_dsn: str, tenant_id: str, *, plan: str = "pro", end_user_id: str | None = None) -> str:
    """An active tenant with a test key (bound to ``end_user_id`` if given); returns the key."""
    key = mint_key("test")
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            """INSERT INTO tenants (id, slug, name, plan, status) VALUES (%s, %s, %s, %s, 'active')
               ON CONFLICT (id) DO NOTHING""",
            (tenant_id, tenant_id.replace("_", "-"), tenant_id, plan),
        )
        conn.execute(
            """INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope, end_user_id)
               VALUES (%s, %s, 'test', %s, %s, %s, 'test', 'inference', %s)""",
            (f"key_{key.key_hash[:16]}", tenant_id, key.key_prefix, key.key_hash, key.key_hint, end_user_id),
        )
    return key.secret


def set_config(owner_dsn: str, tenant_id: str, **values: str) -> None:
    with psycopg.connect(owner_dsn) as conn:
        for name, value in values.items():
            conn.execute(
                """INSERT INTO tenant_config (tenant_id, key, value) VALUES (%s, %s, %s)
                   ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value""",
                (tenant_id, name, value),
            )


def set_feature(owner_dsn: str, tenant_id: str, feature: str, enabled: bool) -> None:
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            """INSERT INTO tenant_feature_overrides (tenant_id, feature, enabled) VALUES (%s, %s, %s)
               ON CONFLICT (tenant_id, feature) DO UPDATE SET enabled = EXCLUDED.enabled""",
            (tenant_id, feature, enabled),
        )


@dataclass
class Harness:
    db: Database
    redis: Redis
    owner_dsn: str
    pipeline: InferencePipeline
    provider: CountingProvider
    recorder: Capture
    flags: PostgresTenantFlags
    cache: ResponseCache
    embedder: Embedder
    demo_key: str
    headers: dict[str, str] = field(default_factory=dict)

    def auth(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.demo_key}", **extra}

    async def complete(self, body: Mapping[str, Any], metadata: Mapping[str, str]) -> tuple[dict[str, Any], Any]:
        admitted = await self.pipeline.admit("chat", dict(body), metadata, new_request_id())
        return await self.pipeline.complete(admitted), admitted

    async def stream(self, body: Mapping[str, Any], metadata: Mapping[str, str]) -> tuple[list[dict[str, Any]], Any]:
        admitted = await self.pipeline.admit("chat", {**body, "stream": True}, metadata, new_request_id())
        chunks = [c async for c in self.pipeline.stream(admitted)]
        return chunks, admitted


async def build_harness(
    db: Database, redis: Redis, owner_dsn: str, *, embedder: Embedder | None = None, chunk_delay_s: float = 0.0
) -> Harness:
    demo_key = json.loads(seed_demo(owner_dsn))["test_key"]
    catalog = Catalog(PostgresCatalogStore(db))
    await catalog.load()
    flags = PostgresTenantFlags(db, ttl_s=0)  # every request reads the current config
    provider = CountingProvider(chunk_delay_s)
    recorder = Capture()
    pipeline_embedder = PipelineEmbedder()
    cache = ResponseCache(flags, RedisResponseCache(redis), db, embedder or pipeline_embedder)
    pipeline = InferencePipeline(
        Authenticator(PostgresKeyStore(db), cache_ttl_s=0), catalog, Router(provider), recorder, cache=cache
    )
    pipeline_embedder.bind(pipeline)
    return Harness(db, redis, owner_dsn, pipeline, provider, recorder, flags, cache, embedder or pipeline_embedder, demo_key)
