"""The shared Redis client.  Short timeouts everywhere: Redis trouble must make
a request fail open (limits) or fail closed (spend caps) within milliseconds,
never hang it.

Keys follow ``relay:{tenant_id}:…`` — the braces are a Redis Cluster hash tag,
so every key of one tenant lives on one shard and multi-key scripts work.

The URL chooses the deployment (``REDIS_URL``):

* ``redis://host:port/db``, ``rediss://…``, ``unix:///path?db=N`` — one Redis;
* ``redis+cluster://host:port,host:port`` (``rediss+cluster://`` for TLS) — a
  Redis Cluster; any reachable node is a seed, the rest is discovered with
  ``CLUSTER SLOTS``.  Credentials go before the first host
  (``redis+cluster://user:secret@h1:p1,h2:p2``).
* ``redis+sentinel://host:26379,host:26379/<master-name>[/db]`` (``rediss+sentinel://``
  for TLS) — a master and replicas watched by Redis Sentinel: connections ask the
  sentinels for the current master, and after a failover the next connection goes
  to the promoted replica (a reply of ``READONLY`` from a demoted master drops the
  connection the same way).

The URL forms are parsed in ``urls.py``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from relay_server.storage.redis.urls import (
    RECHECK_S,
    is_cluster_url,
    is_sentinel_url,
    parse_cluster_url,
    parse_sentinel_url,
)


def _cluster(url: str, *, socket_timeout: float | None, connect_timeout: float, max_connections: int) -> RedisCluster:
    target = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in target.seeds],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        max_connections=max_connections,  # per node
        # A dead master answers nothing until its replica is promoted (a second or two): retry a
        # little (MOVED after a failover is followed at once), then fail so the caller's
        # fail-open / fail-closed rule applies instead of a hung request.
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 2),
        decode_responses=False,
    )


class SentinelMaster(aioredis.Redis):
    """The client of a Sentinel-watched master: closing it closes its sentinel connections too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                await self.sentinel_manager.aclose()


class _RecheckingSentinelPool(SentinelConnectionPool):
    """Connections to whichever server the sentinels name master, asked again every ``RECHECK_S``.

    redis-py asks the sentinels only when it opens a connection; after ``SENTINEL FAILOVER`` the
    old master keeps serving (split) until Sentinel demotes it, up to ~10 s later.  So at most
    once a second a connection handed out asks the sentinels, and one still bound to an address
    they no longer name is reconnected to the new master before it is used.
    """

    _recheck_at = 0.0

    async def ensure_connection(self, connection: Any) -> None:
        now = time.monotonic()
        if self.is_master and now >= self._recheck_at:
            self._recheck_at = now + RECHECK_S
            with contextlib.suppress(RedisError):  # the sentinels unreachable: keep the connection we have
                await self.get_master_address()  # a change also drops the idle connections
        if connection.is_connected and (connection.host, connection.port) != self.master_address:
            await connection.disconnect()
        await super().ensure_connection(connection)


class _BlockingSentinelPool(_RecheckingSentinelPool, aioredis.BlockingConnectionPool):
    """``_RecheckingSentinelPool`` where a burst waits for a free connection instead of failing."""


def _sentinel_master(url: str, *, connect_timeout: float, blocking: bool, **options: Any) -> aioredis.Redis:
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(target.sentinels),
        # The sentinels are asked without credentials (docs/operations-cluster.md), within the connect timeout.
        sentinel_kwargs={
            "socket_timeout": connect_timeout,
            "socket_connect_timeout": connect_timeout,
            "ssl": target.tls,
        },
    )
    client = sentinel.master_for(
        target.master,
        redis_class=SentinelMaster,
        connection_pool_class=_BlockingSentinelPool if blocking else _RecheckingSentinelPool,
        db=target.db, username=target.username, password=target.password, ssl=target.tls,
        socket_connect_timeout=connect_timeout, decode_responses=False, **options,
    )  # fmt: skip
    client.sentinel_manager = sentinel
    return cast(aioredis.Redis, client)


def create_redis(url: str, *, timeout_s: float = 0.25, max_connections: int = 64) -> aioredis.Redis:
    if is_sentinel_url(url):
        return _sentinel_master(
            url, connect_timeout=timeout_s, blocking=True, socket_timeout=timeout_s, max_connections=max_connections,
            timeout=timeout_s, health_check_interval=15, retry_on_timeout=False,
        )  # fmt: skip
    if is_cluster_url(url):
        # RedisCluster serves the command surface Relay uses (commands, pipelines, scripts,
        # publish); it is typed as the single-node client everywhere so callers stay one shape.
        return cast(
            aioredis.Redis,
            _cluster(url, socket_timeout=timeout_s, connect_timeout=timeout_s, max_connections=max_connections),
        )
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


def create_subscriber(url: str) -> aioredis.Redis:
    """A client for one pub/sub listener: its own connection, no read timeout (it waits for messages).

    On a cluster, the subscription is made on the node that owns the channel's hash slot, and
    ``PUBLISH`` is routed to that same node, so the receiver count a publisher gets back counts
    every worker (the cluster bus forwards each message to every node anyway).
    """
    if is_cluster_url(url):
        return cast(aioredis.Redis, _cluster(url, socket_timeout=None, connect_timeout=1.0, max_connections=4))
    if is_sentinel_url(url):
        return _sentinel_master(url, connect_timeout=1.0, blocking=False, socket_timeout=None, health_check_interval=10)
    return aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=None, health_check_interval=10)


async def ready(client: aioredis.Redis) -> None:
    """A cluster client learns its slot map before first use (a pub/sub subscription needs it)."""
    if isinstance(client, RedisCluster):
        await client.initialize()


async def master_moved(client: aioredis.Redis) -> bool:
    """True when ``client`` follows a Sentinel-watched master and the sentinels now name another one.

    A pub/sub subscription lives on one connection, which nothing else moves: after
    ``SENTINEL FAILOVER`` it would stay on the old master, which publishes nothing until Sentinel
    demotes it.  The subscriber asks this every ``RECHECK_S`` and resubscribes when it is True.
    """
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or pool.master_address is None:
        return False
    try:
        named = await pool.sentinel_manager.discover_master(pool.service_name)
    except RedisError:
        return False  # the sentinels unreachable: the subscription stays where it is
    return bool(named != pool.master_address)


async def publish(client: aioredis.Redis, channel: str, message: bytes) -> int:
    """PUBLISH; the count of subscribers that got it.

    On a cluster every node forwards a message to its own subscribers, but the count only
    covers the node that took the PUBLISH: send it to the node that owns the channel's slot,
    where ``create_subscriber``'s subscriptions live, so the count covers every worker.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(channel)
        return int(await client.execute_command("PUBLISH", channel, message, target_nodes=node))
    return int(await client.publish(channel, message))


def tenant_key(tenant_id: str, *parts: str) -> str:
    return "relay:{" + tenant_id + "}:" + ":".join(parts)
