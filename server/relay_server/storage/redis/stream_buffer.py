"""Server-side buffers of thread reply streams (Redis streams), and writer leases.

Each assistant reply being produced has one Redis stream,
``relay:{tenant_id}:thread_stream:{message_id}``, holding its events in order.
Event N is added with the explicit entry id ``0-N``, so "everything after the
event a client last saw" is simply ``XREAD … STREAMS key 0-N``, and a second
writer for the same event (a reaped writer waking up) is refused by Redis
instead of corrupting the order.  Every append refreshes the key's TTL; the
final message lives in Postgres, the buffer only serves reconnects.

Writers hold a lease while they produce: the global sorted set
``relay:thread_stream_leases`` maps ``tenant_id/message_id`` to the lease's
expiry (unix seconds).  A writer renews it every few seconds; a lease that ran
out belongs to a writer that died, which the cleanup worker finalizes.

Blocking reads hold a connection for up to ``block_ms``: use a client of their
own (``create_stream_redis``) so that they never starve the shared one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from relay_server.storage.redis.client import create_redis, tenant_key
from relay_server.storage.redis.urls import is_cluster_url, is_sentinel_url

BUFFER_TTL_S = 3600
LEASES_KEY = "relay:thread_stream_leases"
_FIELD = b"e"


class BufferClosed(Exception):
    """The event slot is taken: someone else finalized this stream."""


@dataclass(frozen=True, slots=True)
class BufferedEvent:
    index: int
    payload: bytes


def create_stream_redis(url: str, *, block_ms: int, max_connections: int = 1024) -> aioredis.Redis:
    """A client for blocking reads: its timeout outlasts a block, and a full pool waits instead of failing."""
    if is_cluster_url(url) or is_sentinel_url(url):
        return create_redis(url, timeout_s=block_ms / 1000 + 2.0, max_connections=max_connections)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        socket_timeout=block_ms / 1000 + 2.0,
        socket_connect_timeout=1.0,
    )
    return aioredis.Redis(connection_pool=pool, decode_responses=False)


def buffer_key(tenant_id: str, message_id: str) -> str:
    return tenant_key(tenant_id, "thread_stream", message_id)


def _lease_member(tenant_id: str, message_id: str) -> str:
    return f"{tenant_id}/{message_id}"


class RedisStreamBuffer:
    def __init__(self, redis: aioredis.Redis, *, ttl_s: int = BUFFER_TTL_S) -> None:
        self._redis = redis
        self._ttl = ttl_s

    async def append(self, tenant_id: str, message_id: str, index: int, payload: bytes) -> None:
        """Add event ``index`` (1, 2, 3, …); raises ``BufferClosed`` if that slot is taken."""
        key = buffer_key(tenant_id, message_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {_FIELD: payload}, id=f"0-{index}")
            pipe.expire(key, self._ttl)
            try:
                await pipe.execute()
            except ResponseError as exc:
                if "equal or smaller" in str(exc):
                    raise BufferClosed(message_id) from None
                raise

    async def read(self, tenant_id: str, message_id: str, after: int, *, block_ms: int | None) -> list[BufferedEvent]:
        """Events after ``after``; with ``block_ms``, waits that long for the first one."""
        key = buffer_key(tenant_id, message_id)
        reply: Any = await self._redis.xread({key: f"0-{after}"}, count=1000, block=block_ms)
        events: list[BufferedEvent] = []
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                raw_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                events.append(BufferedEvent(int(raw_id.split("-", 1)[1]), fields[_FIELD]))
        return events

    async def last_index(self, tenant_id: str, message_id: str) -> int:
        """The index of the last buffered event (0 if none)."""
        entries = await self._redis.xrevrange(buffer_key(tenant_id, message_id), count=1)
        if not entries:
            return 0
        entry_id = entries[0][0]
        raw_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return int(raw_id.split("-", 1)[1])

    async def exists(self, tenant_id: str, message_id: str) -> bool:
        return bool(await self._redis.exists(buffer_key(tenant_id, message_id)))

    # --- writer leases ---------------------------------------------------------

    async def renew_lease(self, tenant_id: str, message_id: str, ttl_s: float) -> None:
        await self._redis.zadd(LEASES_KEY, {_lease_member(tenant_id, message_id): time.time() + ttl_s})

    async def release_lease(self, tenant_id: str, message_id: str) -> None:
        await self._redis.zrem(LEASES_KEY, _lease_member(tenant_id, message_id))

    async def has_lease(self, tenant_id: str, message_id: str) -> bool:
        score = await self._redis.zscore(LEASES_KEY, _lease_member(tenant_id, message_id))
        return score is not None and float(score) > time.time()

    async def expired_leases(self, *, limit: int = 100) -> list[tuple[str, str]]:
        """(tenant_id, message_id) whose lease ran out."""
        members = await self._redis.zrangebyscore(LEASES_KEY, "-inf", time.time(), start=0, num=limit)
        out = []
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            tenant_id, _, message_id = text.partition("/")
            out.append((tenant_id, message_id))
        return out
