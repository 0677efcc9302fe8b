"""The shared (Redis) layer of API-key authentication.

``RedisKeyCache``: key hash → ``KeyRecord`` for ``auth_redis_ttl_s``.  A
failing Redis turns into cache misses (lookups go to Postgres), logged once
per outage, and reads skip Redis for a second after a failure.  When a key
or a tenant changes, the invalidation bus (``policy_bus.py``) tombstones the
entries here and purges every worker's in-process cache.

A purge writes a tombstone instead of deleting, which only a lookup that
started after it may replace (``cache_fill``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.domain.keys import KeyRecord
from relay_server.tenancy.cache_fill import TOMBSTONE_TTL_S, fill, is_tombstone, new_tombstone

log = logging.getLogger(__name__)

_DATES = ("expires_at", "grace_expires_at", "writes_paused_until")


def redis_key(key_hash: str) -> str:
    # Not under a tenant hash tag: the tenant is what this entry tells us.
    return f"relay:auth:key:{key_hash}"


def encode_record(record: KeyRecord) -> bytes:
    data: dict[str, Any] = {name: getattr(record, name) for name in record.__dataclass_fields__}
    for name in ("allowed_models", "tenant_allowed_models", "plan_allowed_models", "tenant_allowed_regions"):
        data[name] = list(getattr(record, name))
    data["rate_limit_overrides"] = dict(record.rate_limit_overrides)
    for name in _DATES:
        value = data[name]
        data[name] = value.isoformat() if value is not None else None
    return orjson.dumps(data)


def decode_record(raw: bytes) -> KeyRecord:
    data = orjson.loads(raw)
    for name in ("allowed_models", "tenant_allowed_models", "plan_allowed_models", "tenant_allowed_regions"):
        data[name] = tuple(data.get(name) or ())
    for name in _DATES:
        if data.get(name):
            data[name] = datetime.fromisoformat(data[name])
    return KeyRecord(**data)


class RedisKeyCache:
    """The ``SharedKeyCache`` of ``pipeline.authenticate`` over Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: int = 300,
        tombstone_s: int = TOMBSTONE_TTL_S,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._ttl = ttl_s
        self._tombstone_s = tombstone_s
        self._backoff = backoff_s
        self._clock = clock
        self._down_until = 0.0
        self._down = False

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self._backoff
        if not self._down:
            self._down = True
            log.warning("redis unavailable: API-key lookups go to Postgres", extra={"error": repr(exc)})

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("redis reachable again: API-key cache back in use")

    async def get(self, key_hash: str) -> tuple[KeyRecord | None, object]:
        """(record or None, what the key held: the stamp ``put`` needs)."""
        if self._down_until > self._clock():
            return None, False
        try:
            raw = await self._redis.get(redis_key(key_hash))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None, False
        self._ok()
        if raw is None or is_tombstone(raw):  # type: ignore[arg-type]
            return None, raw
        try:
            return decode_record(raw), raw  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable API-key cache entry ignored", extra={"key_hint": key_hash[-4:]})
            return None, False

    async def put(self, record: KeyRecord, seen: object) -> None:
        if seen is False or self._down_until > self._clock():
            return  # Redis failed when this lookup started: do not write blind
        try:
            await fill(self._redis, redis_key(record.key_hash), seen, encode_record(record), self._ttl)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def purge(self, key_hashes: Sequence[str]) -> None:
        """Tombstone these entries.  Raises on Redis failure: the caller must know."""
        for start in range(0, len(key_hashes), 1000):
            pipe = self._redis.pipeline(transaction=False)
            for key_hash in key_hashes[start : start + 1000]:
                pipe.set(redis_key(key_hash), new_tombstone(), ex=self._tombstone_s)
            await pipe.execute()
