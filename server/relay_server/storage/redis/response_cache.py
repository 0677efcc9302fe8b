"""Exact-match response cache entries in Redis.

One string per entry under ``relay:{tenant_id}:cache:{key}`` (the tenant is
the hash tag, and part of the key's hash too), expiring after the entry's TTL.
The value is the JSON of the response body plus when it was stored.

The cache is an optimisation: every Redis failure is logged and answered as a
miss (``get``) or ignored (``put``), never raised into a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.storage.redis.client import tenant_key

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    stored_at: float


class RedisResponseCache:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @staticmethod
    def redis_key(tenant_id: str, key: str) -> str:
        return tenant_key(tenant_id, "cache", key)

    async def get(self, tenant_id: str, key: str) -> StoredResponse | None:
        try:
            raw = await self._redis.get(self.redis_key(tenant_id, key))
        except (RedisError, OSError):
            log.warning("response cache read failed; treating as a miss", extra={"tenant_id": tenant_id}, exc_info=True)
            return None
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
            if value.get("f") != _FORMAT or not isinstance(value.get("response"), dict):
                return None
            return StoredResponse(value["response"], float(value.get("at") or 0.0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.warning("unreadable response cache entry ignored", extra={"tenant_id": tenant_id})
            return None

    async def put(self, tenant_id: str, key: str, response: Mapping[str, Any], ttl_s: int) -> bool:
        if ttl_s <= 0:
            return False
        value = orjson.dumps({"f": _FORMAT, "at": time.time(), "response": response})
        try:
            await self._redis.set(self.redis_key(tenant_id, key), value, ex=ttl_s)
        except (RedisError, OSError):
            log.warning("response cache write failed", extra={"tenant_id": tenant_id}, exc_info=True)
            return False
        return True
