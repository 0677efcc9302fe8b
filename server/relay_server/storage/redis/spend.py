"""Spend-cap state in Redis: one hash and one zset per (cap, window).

``relay:{t}:spend:key:{key_id}:{window_id}`` (or ``…:tenant:{environment}:…``)
is a hash ``{spent, reserved, r:<request id> → micros, warned}``; the ``…:res``
zset next to it scores each reservation by its lease deadline.  ``window_id``
is ``d20260115``, ``m202601`` or ``total``, so a new day or month starts from
a new, empty key — seeded from the request log before first use.

Redis is a cache of the truth here: when a hash is missing (restart, flush,
failover), the caller sums the window from Postgres and ``seed``s it.
"""

from __future__ import annotations

from redis.asyncio import Redis

from relay_server.storage.redis.client import tenant_key
from relay_server.storage.redis.limits import pooled


def cap_keys(tenant_id: str, scope: str, subject: str, window_id: str) -> tuple[str, str]:
    """(hash, reservation zset) of one cap window; ``subject`` is a key id or an environment."""
    base = tenant_key(tenant_id, "spend", scope, subject, window_id)
    return base, base + ":res"


class RedisSpend:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def seed(self, hash_key: str, spent_micros: int, ttl_ms: int) -> bool:
        """Create the window with what the request log says was spent; False if it already existed.

        HSETNX: when two processes seed at once, the first one's value stands
        and the second one's reservations are not overwritten.
        """

        async def run() -> list[object]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(hash_key, "spent", int(spent_micros))
                pipe.hsetnx(hash_key, "reserved", 0)
                if ttl_ms > 0:
                    pipe.pexpire(hash_key, ttl_ms)
                return await pipe.execute()

        created, *_ = await pooled(run)
        return bool(created)

    async def read(self, hash_key: str) -> tuple[int, int] | None:
        """(spent, reserved) micros of a window, or None if Redis has no state for it."""
        values = await pooled(lambda: self._redis.hmget(hash_key, ["spent", "reserved"]))
        if values[0] is None:
            return None
        return int(values[0]), int(values[1] or 0)

    async def forget(self, hash_keys: list[str]) -> None:
        """Drop windows whose state is no longer trusted; the next admission reseeds them."""
        if hash_keys:
            await pooled(lambda: self._redis.delete(*hash_keys))
