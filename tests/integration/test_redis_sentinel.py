"""Relay on a Redis master + replica watched by three real Redis Sentinels (loopback ports).

Both Redis clients reach the master through a ``redis+sentinel://`` URL — the hot-path wire
runs the admission script (rate limits and a spend cap), the redis-py client publishes and a
subscriber receives — and both follow the master after ``SENTINEL FAILOVER`` and after the
master is killed, within a bounded time, failing cleanly (never hanging) during the switch.
The data nodes have a password, which must never show in a log line or an error.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay_server.settings import Settings
from relay_server.stack import StackPaths
from relay_server.stack import redis as stack_redis
from relay_server.stack.processes import wait_until
from relay_server.stack.redact import redact
from relay_server.stack.redis_cluster import free_cluster_ports
from relay_server.stack.redis_sentinel import RedisSentinelHandle, start_redis_sentinel
from relay_server.stack.up import _ensure_redis
from relay_server.storage.redis.client import create_redis, create_subscriber, publish, tenant_key
from relay_server.storage.redis.cluster_wire import create_wire
from relay_server.storage.redis.limits import AdmitReply, CapArg, RedisAdmission, WindowArg, noisy_key, window_key
from relay_server.storage.redis.sentinel_wire import SentinelWire
from relay_server.storage.redis.spend import RedisSpend, cap_keys
from relay_server.storage.redis.stream_buffer import create_stream_redis
from relay_server.storage.redis.subscriber import listen_forever
from relay_server.storage.redis.urls import check_redis_url, parse_sentinel_url
from relay_server.storage.redis.wire import Endpoint, RedisWire

pytestmark = pytest.mark.timeout(90)

PASSWORD = "s3ntinel-Pa55"  # noqa: S105 (a test topology's password, looked for in the logs)
FOLLOW_S = 10.0  # a client must reach the new master within this after the sentinels name it


def _start(root: Path) -> RedisSentinelHandle:
    ports = free_cluster_ports(5)
    return start_redis_sentinel(root, ports[:2], ports[2:], password=PASSWORD)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelHandle]:
    handle = _start(tmp_path_factory.mktemp("rsentinel"))
    yield handle
    handle.stop()


@pytest_asyncio.fixture
async def clients(topology: RedisSentinelHandle) -> AsyncIterator[tuple[SentinelWire, Redis]]:
    wire = create_wire(topology.url)
    assert isinstance(wire, SentinelWire)
    client = create_redis(topology.url)
    yield wire, client
    await wire.close()
    await client.aclose()


def test_the_url_form_and_clear_errors_for_bad_ones(tmp_path: Path) -> None:
    parsed = parse_sentinel_url("rediss+sentinel://relay:p%40ss@s1,s2:26380,[::1]:26381/cache%20main/2")
    assert parsed.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert (parsed.master, parsed.db, parsed.tls) == ("cache main", 2, True)
    assert (parsed.username, parsed.password) == ("relay", "p@ss")
    assert PASSWORD not in repr(parse_sentinel_url(f"redis+sentinel://:{PASSWORD}@h/m"))
    bad = {
        f"redis+sentinel://:{PASSWORD}@h1:26379,h2:26379": "names the master",
        f"redis+sentinel://:{PASSWORD}@/relay": "at least one sentinel",
        f"redis+sentinel://:{PASSWORD}@h1:notaport/relay": "bad port",
        f"redis+sentinel://:{PASSWORD}@h1/relay/zero": "is a number",
        f"redis+sentinel://:{PASSWORD}@h1/relay/0/extra": "<master-name>[/db]",
        f"redis+sentinel://:{PASSWORD}@h1/relay?db=1": "no query",
        f"redis+sentinal://:{PASSWORD}@h1/relay": "unsupported Redis URL scheme",
    }
    for url, says in bad.items():
        with pytest.raises(ValueError, match=None) as caught:
            check_redis_url(url)
        assert says in str(caught.value) and PASSWORD not in str(caught.value), (url, caught.value)
    check_redis_url("redis+sentinel://h1,h2:26380/relay/1")  # a good one passes
    # A password with an unescaped "/" or "@" is masked whole, in every URL form.
    for url in (f"redis+sentinel://u:{PASSWORD}@h1:1,h2:2/relay", f"redis+sentinel://:{PASSWORD}/x@h1/relay",
                f"rediss+cluster://u:{PASSWORD}@h1:1", f"postgresql://u:{PASSWORD}@h:5432/db"):  # fmt: skip
        assert PASSWORD not in redact(url) and "***" in redact(url), url
    # `relay serve` stops at once with the reason, not a traceback, and never prints the URL.
    env = {"REDIS_URL": f"redis+sentinel://relay:{PASSWORD}@127.0.0.1:1", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
           "PATH": "/usr/bin:/bin", "RELAY_STATE_DIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "relay_server", "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "REDIS_URL: a Redis Sentinel URL names the master" in done.stderr and "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


async def _admit(admission: RedisAdmission, spend: RedisSpend, tenant: str, request_id: str, now_ms: int) -> str:
    """One admission through the wire's Lua script: a rate-limit window and a spend cap."""
    rpm = window_key(tenant, "rpm")
    cap_hash, cap_zset = cap_keys(tenant, "key", "k1", "total")
    windows = [WindowArg(rpm, "m", 1000, 1, scalable=False)]
    cap = CapArg(cap_hash, cap_zset, cap_micros=1_000_000, amount=10, lease_until_ms=now_ms + 60_000, ttl_ms=0)
    reply = await admission.admit(noisy=noisy_key(tenant), request_id=request_id, now_ms=now_ms, windows=windows, caps=[cap])
    if reply.status == AdmitReply.NEED_SEED:  # no cap state yet on this master: seeded, then admitted
        assert await spend.seed(cap_hash, 0, 0)
        reply = await admission.admit(
            noisy=noisy_key(tenant), request_id=request_id, now_ms=now_ms, windows=windows, caps=[cap]
        )
    return str(reply.status)


async def _until(what: str, attempt, timeout: float = FOLLOW_S):  # noqa: ANN001, ANN202
    """``attempt()``'s value once it stops raising Redis errors; each try is bounded (never hangs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.wait_for(attempt(), 2.0)
        except (RedisError, OSError) as exc:
            assert PASSWORD not in str(exc)
            assert loop.time() < deadline, f"{what}: still failing after {timeout} s: {type(exc).__name__}: {exc}"
            await asyncio.sleep(0.05)


async def test_stream_reads_and_the_stack_ping_go_through_the_sentinels(topology: RedisSentinelHandle) -> None:
    streams = create_stream_redis(topology.url, block_ms=200)
    try:
        key = tenant_key("t-stream", "thread_stream", "m1")
        await streams.xadd(key, {b"e": b"one"}, id="0-1")
        [[_, [(entry_id, fields)]]] = await streams.xread({key: "0-0"}, block=200)
        assert (entry_id, fields) == (b"0-1", {b"e": b"one"})
    finally:
        await streams.aclose()
    assert stack_redis.ping(topology.url)  # what `make up` waits on for an external REDIS_URL
    assert not stack_redis.ping(topology.url.replace(PASSWORD, "wrong"))
    assert not stack_redis.ping(topology.url.replace("/relay", "/no-such-master"))


async def test_a_readonly_reply_is_sent_again_to_the_master_once(
    topology: RedisSentinelHandle, clients: tuple[SentinelWire, Redis]
) -> None:
    """A connection still open to a server that is a replica now (demoted while connected) answers
    READONLY: the command did not run, so the wire asks the sentinels and sends it to the master, once."""
    wire, _ = clients
    master = topology.master_port()
    replica = next(n.port for n in topology.data if n.port != master)
    key = tenant_key("t-readonly", "n")
    assert await wire.execute("INCR", key) == 1
    stale = RedisWire(Endpoint(port=replica, password=PASSWORD))  # no ROLE check: made "before the demotion"
    wire._master, wire._master_addr = stale, ("127.0.0.1", replica)  # noqa: SLF001 (simulating the demotion)
    wire._recheck_at = float("inf")  # noqa: SLF001 (no background check: the READONLY path alone)
    assert await wire.execute("INCR", key) == 2  # refused by the replica, run on the master
    assert wire.master_addr == ("127.0.0.1", master)
    with topology.client(master) as direct:
        assert direct.get(key) == b"2"  # run exactly once
    ok, refused = await wire.batch([["GET", key], ["SET", tenant_key("t-readonly", "m"), "1"]])
    assert (ok, refused) == (b"2", b"OK")


async def test_both_clients_work_through_sentinel_and_follow_a_failover(
    topology: RedisSentinelHandle, clients: tuple[SentinelWire, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wire, client = clients
    admission, spend = RedisAdmission(wire), RedisSpend(client)
    first = topology.master_port()
    assert first is not None
    assert await _admit(admission, spend, "t-sent", "r1", 1_900_000_000_000) == str(AdmitReply.ADMITTED)
    assert wire.master_addr == ("127.0.0.1", first)

    got: list[bytes | str] = []
    subscribed = asyncio.Event()
    stop = asyncio.Event()  # ends the writer below; not Task.cancel(): Python 3.11's wait_for can swallow one

    async def receive(message: bytes | str) -> None:
        got.append(message)

    listener = asyncio.create_task(
        listen_forever(lambda: create_subscriber(topology.url), "relay:test:sentinel", receive,
                       on_subscribed=lambda: None, subscribed=subscribed, what="test")
    )  # fmt: skip
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        assert await publish(client, "relay:test:sentinel", b"before") == 1
        await _until("the message before the failover", lambda: _received(got, b"before"))

        # Writes keep coming during the switch-over; each is bounded, none is ever sent twice.
        key = tenant_key("t-sent", "writes")
        attempts = written_after_switch = 0
        switched = False

        async def write_forever() -> None:
            nonlocal attempts, written_after_switch
            while not stop.is_set():
                attempts += 1
                started_after_switch = switched
                try:
                    await asyncio.wait_for(wire.execute("INCR", key), 1.0)
                    written_after_switch += started_after_switch
                except (RedisConnectionError, RedisTimeoutError, RedisError):
                    pass  # the caller's fail-open / fail-closed rule would apply
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(write_forever())
        topology.failover()
        # Waited for in a thread, so the writer keeps writing through the switch-over.
        await asyncio.to_thread(
            wait_until, lambda: topology.master_port() not in (None, first), timeout=15, what="sentinel failover"
        )
        second = topology.master_port()
        assert second is not None

        async def on_new_master() -> str:
            status = await _admit(admission, spend, "t-sent", f"r{attempts}", 1_900_000_001_000)
            _not_yet(wire.master_addr == ("127.0.0.1", second), "the wire still writes to the old master")
            return status

        assert await _until("the wire on the new master", on_new_master) == str(AdmitReply.ADMITTED)
        # Writes that reached the old master before Sentinel demoted it are lost (asynchronous
        # replication), and so may be one already under way when the wire switched: let the writer land
        # at least one increment it started after the switch before stopping.
        switched = True

        async def written_since_switch() -> bool:
            _not_yet(written_after_switch > 0, "no write since the switch yet")
            return True

        await _until("a write on the new master", written_since_switch)
        stop.set()
        await asyncio.wait_for(writer, 5)
        with topology.client(second) as direct:
            assert 0 < int(direct.get(key) or 0) <= attempts  # never more increments than calls

        async def client_on_new_master() -> bool:
            await client.set(tenant_key("t-sent", "after"), b"1")
            with topology.client(second) as direct:
                _not_yet(direct.get(tenant_key("t-sent", "after")) == b"1", "redis-py wrote to the old master")
            await client.delete(tenant_key("t-sent", "after"))
            return True

        assert await _until("the redis-py client on the new master", client_on_new_master)

        async def delivered_after() -> bool:
            await publish(client, "relay:test:sentinel", b"after")
            await asyncio.sleep(0.2)
            return await _received(got, b"after")

        assert await _until("a message published after the failover", delivered_after)
    finally:
        stop.set()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert all(PASSWORD not in r.getMessage() and PASSWORD not in str(r.__dict__) for r in caplog.records)


async def _received(got: list[bytes | str], message: bytes) -> bool:
    _not_yet(message in got, f"not received yet: {message!r}")
    return True


def _not_yet(ok: bool, what: str) -> None:
    """A condition ``_until`` keeps retrying (as it does a Redis error) until its deadline."""
    if not ok:
        raise RedisConnectionError(what)


async def test_a_killed_master_fails_fast_then_its_replica_serves(tmp_path: Path) -> None:
    own = _start(tmp_path / "topology")
    wire = create_wire(own.url)
    client = create_redis(own.url)
    try:
        assert isinstance(wire, SentinelWire)
        key = tenant_key("t-kill", "n")
        assert await wire.execute("INCR", key) == 1
        await client.set(tenant_key("t-kill", "c"), b"1")
        first = own.master_port()
        assert first is not None
        own.node(first).stop()
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):  # at once: the caller's rule applies
            await asyncio.wait_for(wire.execute("INCR", key), 2.0)
        wait_until(lambda: own.master_port() not in (None, first), timeout=20, what="failover after a kill")
        second = own.master_port()
        assert await _until("the wire on the promoted replica", lambda: wire.execute("INCR", key)) >= 2
        assert wire.master_addr == ("127.0.0.1", second)
        assert await _until("redis-py on the promoted replica", lambda: client.incr(tenant_key("t-kill", "c"))) >= 2
    finally:
        await wire.close()
        await client.aclose()
        own.stop()


def test_make_up_takes_an_external_sentinel_url_and_never_prints_its_password(
    topology: RedisSentinelHandle, tmp_path: Path
) -> None:
    said: list[str] = []
    settings = Settings(redis_url=topology.url, state_dir=tmp_path)
    assert _ensure_redis(settings, StackPaths(tmp_path), {}, said.append) == topology.url
    assert said and "redis+sentinel://:***@127.0.0.1:" in said[0] and PASSWORD not in " ".join(said)
