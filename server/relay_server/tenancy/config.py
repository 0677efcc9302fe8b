"""Per-tenant configuration as the request path sees it.

``await TenantConfigReader.get(tenant_id) -> TenantConfig``: markup rate,
allowed models, default cache TTL, webhook URL and the effective feature
set (plan defaults, then unexpired overrides).  Read through a Redis cache
(``config_cache_ttl_s``, 60 s by default, never past the next override
expiry), invalidated on every change; with Redis down it reads Postgres.

Values are parsed with ``config_values.validate_entry`` (the same rules that
validate writes), so a bad stored value falls back to the default (logged)
instead of failing requests.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.tenant_config import snapshot
from relay_server.storage.redis.client import tenant_key
from relay_server.tenancy.cache_fill import TOMBSTONE_TTL_S, fill, is_tombstone, new_tombstone
from relay_server.tenancy.config_values import CONFIG_KEYS, validate_entry

__all__ = ["CONFIG_KEYS", "TenantConfig", "TenantConfigReader", "validate_entry"]

log = logging.getLogger(__name__)

DEFAULT_MARKUP = Decimal("0.20")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    tenant_id: str
    plan: str
    markup_rate: Decimal = DEFAULT_MARKUP
    allowed_models: tuple[str, ...] = ()  # empty: every model
    default_cache_ttl_s: int | None = None  # None: caching off unless a request asks
    webhook_url: str | None = None
    features: frozenset[str] = field(default_factory=frozenset)
    spend_cap_micros: int | None = None  # the tenant-wide cap, when set
    spend_cap_window: str = "monthly"
    values: Mapping[str, str] = field(default_factory=dict)  # every valid entry, normalised

    def has(self, feature: str) -> bool:
        return feature in self.features


def parse_config(tenant_id: str, plan: str, values: Mapping[str, str], features: frozenset[str]) -> TenantConfig:
    parsed: dict[str, str] = {}
    for key, raw in values.items():
        try:
            parsed[key] = validate_entry(key, raw)
        except RelayError:
            log.warning("ignoring invalid stored config value", extra={"tenant_id": tenant_id, "config_key": key})
    ttl = parsed.get("default_cache_ttl_sec")
    return TenantConfig(
        tenant_id=tenant_id,
        plan=plan,
        markup_rate=Decimal(parsed["markup_rate"]) if "markup_rate" in parsed else DEFAULT_MARKUP,
        allowed_models=tuple(json.loads(parsed["allowed_models"])) if "allowed_models" in parsed else (),
        default_cache_ttl_s=int(ttl) if ttl is not None else None,
        webhook_url=parsed.get("webhook_url"),
        features=features,
        spend_cap_micros=int(Decimal(parsed["spend_cap_usd"]) * 1_000_000) if "spend_cap_usd" in parsed else None,
        spend_cap_window=parsed.get("spend_cap_window", "monthly"),
        values=parsed,
    )


def _encode(config: TenantConfig) -> bytes:
    return orjson.dumps(
        {"tenant_id": config.tenant_id, "plan": config.plan, "features": sorted(config.features), "values": dict(config.values)}
    )


def _decode(raw: bytes) -> TenantConfig:
    data = orjson.loads(raw)
    # Re-parsed from the stored entries: one parser for cache and database.
    return parse_config(data["tenant_id"], data["plan"], data["values"], frozenset(data["features"]))


def cache_key(tenant_id: str) -> str:
    return tenant_key(tenant_id, "config")


class TenantConfigReader:
    def __init__(
        self,
        db: Database,
        redis: Redis | None,
        *,
        ttl_s: int = 60,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._redis = redis
        self._ttl = ttl_s
        self._now = now
        self._clock = clock
        self._skip_redis_until = 0.0

    async def get(self, tenant_id: str) -> TenantConfig:
        """The tenant's configuration; NOT_FOUND for an unknown tenant."""
        key = cache_key(tenant_id)
        use_redis = self._redis is not None and self._skip_redis_until <= self._clock()
        seen: bytes | None = None
        if use_redis:
            try:
                seen = await self._redis.get(key)  # type: ignore[union-attr,assignment]
                if seen is not None and not is_tombstone(seen):
                    return _decode(seen)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                use_redis = False
        config, ttl = await self._load(tenant_id)
        if use_redis and ttl > 0:
            try:
                await fill(self._redis, key, seen, _encode(config), ttl)  # type: ignore[arg-type]
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        return config

    async def invalidate(self, tenant_id: str) -> None:
        """Forget the cached configuration (after a change has committed)."""
        if self._redis is None:
            return
        try:
            await self._redis.set(cache_key(tenant_id), new_tombstone(), ex=TOMBSTONE_TTL_S)
        except (RedisError, OSError) as exc:
            # The entry dies with its TTL (at most ttl_s); say so.
            log.warning("tenant config cache invalidation failed", extra={"tenant_id": tenant_id, "error": repr(exc)})

    async def _load(self, tenant_id: str) -> tuple[TenantConfig, int]:
        now = self._now()
        async with self._db.tenant_tx(tenant_id) as conn:
            snap = await snapshot(conn, tenant_id, now)
        if snap is None:
            raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
        features = frozenset(f.feature for f in snap.features if f.enabled)
        ttl = self._ttl
        expiries = [f.expires_at for f in snap.features if f.expires_at is not None]
        if expiries:  # an override that ends must end on time, not up to a TTL later
            ttl = min(ttl, int((min(expiries) - now).total_seconds()))
        return parse_config(tenant_id, snap.plan, snap.values, features), ttl

    def _redis_failed(self, exc: BaseException) -> None:
        self._skip_redis_until = self._clock() + 1.0
        log.warning("redis unavailable: tenant config read from Postgres", extra={"error": repr(exc)})
