"""The shared Redis client.  Short timeouts everywhere: Redis trouble must make
a request fail open (limits) or fail closed (spend caps) within milliseconds,
never hang it.

Keys follow ``relay:{tenant_id}:…`` — the braces are a Redis Cluster hash tag,
so every key of one tenant lives on one shard and multi-key scripts work.
"""

from __future__ import annotations

import redis.asyncio as aioredis


def create_redis(url: str, *, timeout_s: float = 0.25, max_connections: int = 64) -> aioredis.Redis:
    # A blocking pool queues a burst beyond max_connections for up to timeout_s
    # instead of failing at once (the default pool raises MaxConnectionsError).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=max_connections,
        timeout=timeout_s,
        health_check_interval=15,
        retry_on_timeout=False,
        decode_responses=False,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def tenant_key(tenant_id: str, *parts: str) -> str:
    return "relay:{" + tenant_id + "}:" + ":".join(parts)
