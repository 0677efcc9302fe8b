"""An in-process Relay pipeline with real metering (Postgres, Redis, request-log
writer, spool) for metering tests, and helpers to make tenants and keys.

Test keys run the deterministic test-mode provider, which always reports
usage; ``provider=`` swaps in another Provider (e.g. one that drops usage).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis

from relay_server.app.metering import Metering, build_metering
from relay_server.domain.keys import mint_key
from relay_server.domain.provider import Provider
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.ids import new_id
from relay_server.pipeline.inference import Admitted, InferencePipeline
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.routing.route import Router
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.providers.testmode import TestModeProvider
from relay_server.settings import Settings
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.keys import PostgresKeyStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.wire import Endpoint, RedisWire

MESSAGES = [{"role": "user", "content": "Tell me about gateways."}]


@dataclass(frozen=True)
class Key:
    tenant_id: str
    key_id: str
    secret: str = field(repr=False)

    @property
    def metadata(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.secret}"}


def make_tenant(owner_dsn: str, *, plan: str = "pro", config: Mapping[str, str] | None = None) -> str:
    tenant_id = new_id("ten")
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, plan, status) VALUES (%s, %s, %s, %s, 'active')",
            (tenant_id, tenant_id.replace("_", "-"), tenant_id, plan),
        )
        for name, value in (config or {}).items():
            conn.execute("INSERT INTO tenant_config (tenant_id, key, value) VALUES (%s, %s, %s)", (tenant_id, name, value))
    return tenant_id


def make_key(
    owner_dsn: str,
    tenant_id: str,
    *,
    environment: str = "test",
    cap_micros: int | None = None,
    cap_window: str | None = None,
    rate_limits: Mapping[str, int] | None = None,
    end_user_id: str | None = None,
    scope: str = "inference",
) -> Key:
    minted = mint_key(environment)
    key_id = new_id("key")
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            """INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope,
                                     end_user_id, rate_limit_overrides, spend_cap_micros, spend_cap_window)
               VALUES (%s, %s, 'test', %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (key_id, tenant_id, minted.key_prefix, minted.key_hash, minted.key_hint, environment, scope, end_user_id,
             json.dumps(rate_limits) if rate_limits else None, cap_micros, cap_window if cap_micros is not None else None),
        )  # fmt: skip
    return Key(tenant_id, key_id, minted.secret)


def settings_for(owner_dsn: str, app_dsn: str, state_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": owner_dsn,
        "app_database_url": app_dsn,
        "state_dir": state_dir,
        "request_log_flush_s": 0.02,
        "spool_replay_s": 0.2,
        "policy_cache_ttl_s": 0.2,
    }
    base.update(overrides)
    return Settings(**base)


@dataclass
class Harness:
    pipeline: InferencePipeline
    metering: Metering
    db: Database
    wire: RedisWire | None = None

    async def chat(self, key: Key, **body: Any) -> dict[str, Any] | RelayError:
        """A non-streaming chat request; the RelayError instead of raising it."""
        try:
            admitted = await self.admit(key, {"model": "gpt-4o-mini", "messages": MESSAGES, **body})
            return await self.pipeline.complete(admitted)
        except RelayError as err:
            return err

    async def admit(self, key: Key, body: Mapping[str, Any], kind: str = "chat") -> Admitted:
        return await self.pipeline.admit(kind, body, key.metadata, new_request_id())  # type: ignore[arg-type]

    async def rows(self, tenant_id: str) -> list[dict[str, Any]]:
        await self.pipeline.drain()  # requests metered after their response (settle_after_response)
        await self.metering.writer.flush()
        async with self.db.system_tx() as conn:
            return list(
                await (await conn.execute("SELECT * FROM requests WHERE tenant_id = %s ORDER BY created_at", (tenant_id,))).fetchall()
            )

    async def close(self) -> None:
        await self.pipeline.drain()
        await self.metering.stop()
        if self.wire is not None:
            await self.wire.close()


async def build_harness(
    db: Database, redis: Redis | None, settings: Settings, *, provider: Provider | None = None,
    settle_after_response: bool = False, resolver: ModelResolver | None = None,
) -> Harness:
    catalog = Catalog(PostgresCatalogStore(db))
    await catalog.load()
    wire = wire_for(redis) if redis is not None else None
    metering = build_metering(settings, db, redis, wire, runner=None)
    pipeline = InferencePipeline(
        Authenticator(PostgresKeyStore(db), cache_ttl_s=60),
        catalog,
        Router(provider or TestModeProvider()),
        metering.recorder,
        gate=metering.gate,
        markups=metering.tenant_config,
        usage_policy=metering.usage_policy,
        settle_after_response=settle_after_response,
        resolver=resolver,
    )
    await metering.start()
    return Harness(pipeline, metering, db, wire)


def wire_for(redis: Redis) -> RedisWire:
    """The per-request connection to the same Redis as a test's redis-py client."""
    kwargs = redis.connection_pool.connection_kwargs
    return RedisWire(Endpoint(host=kwargs["host"], port=kwargs["port"], db=int(kwargs.get("db") or 0)))
