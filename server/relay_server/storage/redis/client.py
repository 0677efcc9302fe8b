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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    seeds: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL (scheme {scheme!r})")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if secret else None)
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not item.strip():
            continue
        if not host:  # "h1" without a port
            host, port = item.strip(), "6379"
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise ValueError("a Redis Cluster URL needs at least one host:port")
    return ClusterUrl(tuple(seeds), CLUSTER_SCHEMES[scheme.lower()], username, password)


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


def create_redis(url: str, *, timeout_s: float = 0.25, max_connections: int = 64) -> aioredis.Redis:
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
    return aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=None, health_check_interval=10)


async def ready(client: aioredis.Redis) -> None:
    """A cluster client learns its slot map before first use (a pub/sub subscription needs it)."""
    if isinstance(client, RedisCluster):
        await client.initialize()


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
