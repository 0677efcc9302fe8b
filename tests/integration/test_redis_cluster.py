"""Relay on a real Redis Cluster (3 masters + 3 replicas on loopback).

Every Lua script runs on the cluster through the code that calls it in production: a script
whose keys spanned two hash slots would be refused (CROSSSLOT), so running them is the proof
that each one's keys share a tenant or provider tag.  The hot-path client follows MOVED and ASK,
survives a failover, and pub/sub reaches every subscriber whichever node it lands on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path

import pytest
import pytest_asyncio
import redis as sync_redis
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay_server.catalog.sync import CHANNEL as CATALOG_CHANNEL
from relay_server.stack.processes import wait_until
from relay_server.stack.redis_cluster import RedisClusterHandle, free_cluster_ports, start_redis_cluster
from relay_server.storage.redis.client import (
    create_redis,
    create_subscriber,
    is_cluster_url,
    parse_cluster_url,
    publish,
    tenant_key,
)
from relay_server.storage.redis.cluster_wire import ClusterWire, create_wire
from relay_server.storage.redis.health import RedisHealthStore, circuit_reads
from relay_server.storage.redis.limits import (
    AdmitReply,
    CapArg,
    RedisAdmission,
    SettleCap,
    WindowArg,
    noisy_key,
    window_key,
)
from relay_server.storage.redis.outbound import OutboundWindows, Taken, window_keys
from relay_server.storage.redis.route_latency import RedisRouteLatency, ewma_key
from relay_server.storage.redis.spend import RedisSpend, cap_keys
from relay_server.storage.redis.subscriber import listen_forever
from relay_server.storage.redis.wire import RedisWire
from relay_server.tenancy.cache_fill import fill
from relay_server.tenancy.policy_bus import CHANNEL as POLICY_CHANNEL

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterHandle]:
    handle = start_redis_cluster(tmp_path_factory.mktemp("rcluster"), free_cluster_ports(6), replicas_per_master=1)
    yield handle
    handle.stop()


@pytest_asyncio.fixture
async def client(cluster: RedisClusterHandle) -> AsyncIterator[Redis]:
    redis = create_redis(cluster.url)
    yield redis
    await redis.aclose()


@pytest_asyncio.fixture
async def wire(cluster: RedisClusterHandle) -> AsyncIterator[ClusterWire]:
    w = ClusterWire.from_url(cluster.url)
    yield w
    await w.close()


def _tenants_on_every_master(cluster: RedisClusterHandle, n: int = 1) -> list[str]:
    """Tenant ids whose hash slots fall on each of the masters (so a test crosses nodes)."""
    masters = cluster.masters()
    found: dict[int, list[str]] = {port: [] for port in masters}
    i = 0
    while any(len(v) < n for v in found.values()):
        tenant = f"t{i}"
        slot = key_slot(tenant_key(tenant, "x").encode())
        port = next(p for p, ranges in masters.items() if any(a <= slot <= b for a, b in ranges))
        if len(found[port]) < n:
            found[port].append(tenant)
        i += 1
    return [t for ts in found.values() for t in ts]


def test_urls_choose_the_deployment() -> None:
    assert is_cluster_url("redis+cluster://a:1,b:2") and is_cluster_url("rediss+cluster://a:1")
    assert not is_cluster_url("redis://a:1/0") and not is_cluster_url("unix:///tmp/r.sock")
    parsed = parse_cluster_url("rediss+cluster://relay:s%40cret@h1:7000,h2:7001/")
    assert parsed.seeds == (("h1", 7000), ("h2", 7001)) and parsed.tls
    assert (parsed.username, parsed.password) == ("relay", "s@cret")
    assert isinstance(create_wire("redis://127.0.0.1:1/0"), RedisWire)
    assert isinstance(create_wire("redis+cluster://127.0.0.1:1"), ClusterWire)
    with pytest.raises(ValueError):
        parse_cluster_url("redis+cluster://")


async def test_every_lua_script_runs_on_the_cluster(
    cluster: RedisClusterHandle, client: Redis, wire: ClusterWire
) -> None:
    ran: set[str] = set()
    tenants = _tenants_on_every_master(cluster)
    admission = RedisAdmission(wire)
    spend = RedisSpend(client)
    now_ms = 1_900_000_000_000
    for tenant in tenants:  # one tenant per master: the wire routes each to its own node
        rpm, tpm = window_key(tenant, "rpm"), window_key(tenant, "tpm")
        key_rpm = window_key(tenant, "rpm", key_id="k1")
        cap_hash, cap_zset = cap_keys(tenant, "key", "k1", "total")
        keys = [rpm, tpm, key_rpm, cap_hash, cap_zset, noisy_key(tenant)]
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
        windows = [
            WindowArg(rpm, "m", 100, 1, scalable=True),
            WindowArg(tpm, "m", 10_000, 50, scalable=True),
            WindowArg(key_rpm, "m", 10, 1, scalable=False),
        ]
        cap = CapArg(cap_hash, cap_zset, cap_micros=1_000, amount=400, lease_until_ms=now_ms + 60_000, ttl_ms=0)
        first = await admission.admit(
            noisy=noisy_key(tenant), request_id="r1", now_ms=now_ms, windows=windows, caps=[cap]
        )
        assert first.status == AdmitReply.NEED_SEED  # no cap state yet: seeded from the request log
        assert await spend.seed(cap_hash, 0, 0)
        admitted = await admission.admit(
            noisy=noisy_key(tenant), request_id="r1", now_ms=now_ms, windows=windows, caps=[cap]
        )
        assert admitted.status == AdmitReply.ADMITTED
        settled = await admission.settle(
            request_id="r1", admit_s=now_ms // 1000, now_ms=now_ms + 10, token_windows=[(tpm, 7)],
            caps=[SettleCap(cap_hash, cap_zset, actual_micros=300, warn_at_micros=900)],
        )  # fmt: skip
        assert settled == [(300, False)]
        assert await spend.read(cap_hash) == (300, 0)
    ran |= {"admit.lua", "settle.lua"}

    health = RedisHealthStore(client)
    for provider in ("openai", "anthropic", "p3"):
        opened = await health.circuit_op(provider, "failure", threshold=1, cooldown_ms=5_000, lease_ms=1_000)
        assert opened  # the circuit script answered on the provider's node
        assert (await health.circuits([provider]))[provider].state == "open"
    states = await health.circuits(["openai", "anthropic", "p3"])  # one pipeline across nodes
    assert {s.state for s in states.values()} == {"open"}
    ran.add("circuit.lua")

    outbound = OutboundWindows(client)
    for provider in ("openai", "anthropic", "p3"):
        assert len({key_slot(k.encode()) for c in ("c1", "c2") for k in window_keys(provider, c)}) == 1
        taken = await outbound.acquire(provider, "c1", rpm_limit=10, tpm_limit=1000, tokens=100)
        assert isinstance(taken, Taken)
        await outbound.settle(provider, "c1", taken, actual_tokens=150, cool_ms=2_000)
    usage = await outbound.usage({"openai": ["c1", "c2"], "anthropic": ["c1"], "p3": ["c1"]})
    assert usage["openai"]["c1"].requests == 1 and usage["openai"]["c1"].tokens == 150
    assert usage["openai"]["c1"].cooling_ms > 0 and usage["openai"]["c2"].requests == 0
    ran |= {"outbound_acquire.lua", "outbound_settle.lua", "outbound_usage.lua"}

    # The plan-time reads: circuits and outbound usage of several providers in one wire batch.
    circuit_commands, read_circuits = circuit_reads(["openai", "anthropic", "p3"])
    commands, read = outbound.usage_reads({"openai": ["c1"], "anthropic": ["c1"], "p3": ["c1"]})
    replies = await wire.batch([*circuit_commands, *commands])
    assert {s.state for s in read_circuits(replies[:3]).values()} == {"open"}
    assert read(replies[3:])["anthropic"]["c1"].requests == 1

    latency = RedisRouteLatency(client)  # one call records samples of many routes
    samples = [("m1", "openai", 100, 400, now_ms), ("m2", "anthropic", 50, 200, now_ms), ("m3", "p3", 9, 90, now_ms)]
    assert len({key_slot(ewma_key(m, p).encode()) for m, p, *_ in samples}) == 1
    await latency.record(samples)
    measured = await latency.read([("m1", "openai"), ("m2", "anthropic"), ("m3", "p3")])
    assert measured[("m1", "openai")].samples == 1 and measured[("m2", "anthropic")].ttft_ms == 50
    ran.add("route_ewma.lua")

    await fill(client, tenant_key(tenants[0], "auth", "h"), None, b"v", 60)  # the compare-and-set EVAL
    assert await client.get(tenant_key(tenants[0], "auth", "h")) == b"v"

    shipped = {p.name for p in resources.files("relay_server.storage.redis").joinpath("scripts").iterdir()}
    assert ran == {n for n in shipped if n.endswith(".lua")}, "a new Lua script needs a cluster run here"


async def test_the_wire_keeps_reply_order_across_nodes(cluster: RedisClusterHandle, wire: ClusterWire) -> None:
    tenants = _tenants_on_every_master(cluster, n=3)
    commands = [["SET", tenant_key(t, "v"), t] for t in tenants] + [["GET", tenant_key(t, "v")] for t in tenants]
    replies = await wire.batch(commands)
    assert replies[len(tenants) :] == [t.encode() for t in tenants]
    assert await wire.execute("PING") == b"PONG"


async def test_the_wire_follows_moved_and_ask(cluster: RedisClusterHandle, wire: ClusterWire) -> None:
    tenant_a, tenant_b, *_ = _tenants_on_every_master(cluster)
    await wire.execute("SET", tenant_key(tenant_a, "m"), "a")
    # A wrong map (every slot on one node): the others answer MOVED and the wire follows.
    wrong = next(iter(cluster.masters()))
    wire._slots = [("127.0.0.1", wrong)] * len(wire._slots)  # noqa: SLF001 (simulating a stale map)
    wire._stale = False  # noqa: SLF001
    assert await wire.batch([["GET", tenant_key(tenant_a, "m")], ["GET", tenant_key(tenant_b, "m")]]) == [b"a", None]

    # A slot being migrated: keys not yet moved answer ASK from the old owner.
    key = tenant_key(tenant_b, "asked")
    slot = key_slot(key.encode())
    masters = cluster.masters()
    source = next(p for p, ranges in masters.items() if any(a <= slot <= b for a, b in ranges))
    target = next(p for p in masters if p != source)
    src, dst = sync_redis.Redis(port=source), sync_redis.Redis(port=target)
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        fresh = ClusterWire.from_url(cluster.url)
        try:
            assert await fresh.execute("SET", key, "moved-here") is not None
            assert dst.execute_command("ASKING") and dst.get(key) == b"moved-here"  # written on the target
            assert key.encode() not in src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
        finally:
            await fresh.close()
            dst.execute_command("ASKING")
            dst.delete(key)  # the slot goes back to its owner empty
    finally:
        for node in (src, dst):
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", src_id)
            node.close()


async def test_a_failover_is_followed(cluster: RedisClusterHandle, wire: ClusterWire) -> None:
    tenant = _tenants_on_every_master(cluster)[0]
    key = tenant_key(tenant, "fo")
    await wire.execute("SET", key, "before")
    slot = key_slot(key.encode())
    master = next(p for p, r in cluster.masters().items() if any(a <= slot <= b for a, b in r))
    replica = _replica_of(cluster, master)
    with sync_redis.Redis(port=replica) as r:
        r.execute_command("CLUSTER FAILOVER")  # the replica takes over, the old master steps down
    wait_until(lambda: _master_of(cluster, slot) == replica, timeout=15, what="failover")
    # The old master now answers MOVED: the wire follows it and re-reads the map.
    assert await wire.execute("GET", key) == b"before"
    assert await wire.execute("SET", key, "after") is not None
    assert wire._slots[slot] == ("127.0.0.1", replica)  # noqa: SLF001


def _master_of(cluster: RedisClusterHandle, slot: int) -> int | None:
    try:
        masters = cluster.masters()
    except RuntimeError:
        return None
    return next((p for p, r in masters.items() if any(a <= slot <= b for a, b in r)), None)


def _replica_of(cluster: RedisClusterHandle, master: int) -> int:
    for port in cluster.ports:
        with sync_redis.Redis(port=port) as r:
            role = r.execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == master:
                return port
    raise AssertionError(f"no replica of {master}")


async def test_a_dead_master_fails_fast_then_its_replica_serves(tmp_path: Path) -> None:
    own = start_redis_cluster(tmp_path, free_cluster_ports(6), replicas_per_master=1)
    wire = ClusterWire.from_url(own.url)
    try:
        tenant = _tenants_on_every_master(own)[0]
        key = tenant_key(tenant, "dead")
        await wire.execute("SET", key, "1")
        slot = key_slot(key.encode())
        master = _master_of(own, slot)
        assert master is not None
        own.node(master).stop()
        with pytest.raises(RedisConnectionError):  # fails at once: the caller's fail-open/closed rule applies
            await asyncio.wait_for(wire.execute("GET", key), 1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:  # the replica is promoted after cluster-node-timeout; calls then succeed again
            try:
                assert await wire.execute("INCR", key) == 2
                break
            except (RedisConnectionError, ResponseError):
                assert loop.time() < deadline, "the replica never took over"
                await asyncio.sleep(0.1)
        assert _master_of(own, slot) != master
    finally:
        await wire.close()
        own.stop()


@pytest.mark.parametrize("channel", [POLICY_CHANNEL, CATALOG_CHANNEL])
async def test_pubsub_reaches_every_worker_and_counts_them(
    cluster: RedisClusterHandle, client: Redis, channel: str
) -> None:
    got: list[list[bytes | str]] = [[], [], []]
    ready = [asyncio.Event() for _ in got]
    tasks = [
        asyncio.create_task(
            listen_forever(
                lambda: create_subscriber(cluster.url),
                channel,
                lambda m, box=box: _append(box, m),
                on_subscribed=lambda: None,
                subscribed=ev,
                what="test",
            )
        )
        for box, ev in zip(got, ready, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
        # The publisher's receiver count is what the policy bus waits acknowledgements for.
        assert await publish(client, channel, b"hello") == len(got)
        async with asyncio.timeout(10):
            while any(not box for box in got):
                await asyncio.sleep(0.01)
        assert all(box == [b"hello"] for box in got)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _append(box: list[bytes | str], message: bytes | str) -> None:
    box.append(message)
