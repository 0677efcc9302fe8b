"""RedisWire, the per-request pipelined connection, against a real Redis and against
sockets that misbehave (silent, garbage, closed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay_server.stack.processes import free_port
from relay_server.stack.redis import start_redis
from relay_server.storage.redis.wire import Endpoint, RedisWire, Script

COUNTER = Script.of("return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def test_commands_scripts_and_error_replies(redis_wire: RedisWire, redis_client: Redis) -> None:
    assert await redis_wire.execute("SET", "relay:{t}:k", "v") == b"OK"
    assert await redis_wire.execute("GET", "relay:{t}:k") == b"v"
    assert await redis_wire.script(COUNTER, ["relay:{t}:n"], [5]) == 5
    # An error reply in a batch is a value in its slot; the neighbours still get theirs.
    replies = await redis_wire.batch([("INCR", "relay:{t}:n"), ("INCR", "relay:{t}:k"), ("HMGET", "relay:{t}:h", "a", "b")])
    assert replies[0] == 6 and isinstance(replies[1], ResponseError) and replies[2] == [None, None]
    with pytest.raises(ResponseError):
        await redis_wire.execute("INCR", "relay:{t}:k")
    assert await redis_client.get("relay:{t}:n") == b"6"


async def test_a_flushed_script_is_loaded_again(redis_wire: RedisWire, redis_client: Redis) -> None:
    assert await redis_wire.script(COUNTER, ["relay:{t}:n"], [1]) == 1
    await redis_client.script_flush()  # as after a Redis restart
    assert await redis_wire.script(COUNTER, ["relay:{t}:n"], [1]) == 2


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(
    redis_wire: RedisWire, redis_client: Redis
) -> None:
    before = len(await redis_client.client_list())
    results = await asyncio.gather(*(redis_wire.execute("ECHO", f"caller-{i}") for i in range(200)))
    assert results == [f"caller-{i}".encode() for i in range(200)]
    assert len(await redis_client.client_list()) == before + 1


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(redis_wire: RedisWire) -> None:
    await redis_wire.execute("PING")
    slow = asyncio.ensure_future(redis_wire.execute("ECHO", "cancelled"))
    after = [asyncio.ensure_future(redis_wire.execute("ECHO", f"after-{i}")) for i in range(5)]
    await asyncio.sleep(0)  # the commands are queued for the same write
    slow.cancel()
    assert [await f for f in after] == [f"after-{i}".encode() for i in range(5)]
    assert await redis_wire.execute("ECHO", "next") == b"next"


async def test_redis_down_fails_fast_and_the_next_call_reconnects(tmp_path) -> None:  # noqa: ANN001
    port = free_port()
    server = start_redis(tmp_path / "redis", port)
    wire = RedisWire.from_url(server.url)
    try:
        assert await wire.execute("PING") == b"PONG"
        server.stop()
        with pytest.raises(RedisConnectionError):
            await wire.execute("PING")
        with pytest.raises(RedisConnectionError):
            await wire.execute("PING")  # refused, not hung
        server = start_redis(tmp_path / "redis", port)
        assert await wire.execute("PING") == b"PONG"
    finally:
        await wire.close()
        server.stop()


async def test_nothing_listening_is_a_connection_error() -> None:
    wire = RedisWire.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisConnectionError):
        await wire.batch([("PING",), ("PING",)])
    await wire.close()


@pytest_asyncio.fixture
async def fake_server() -> AsyncIterator[Callable[..., asyncio.Future[int]]]:
    """A TCP server whose behaviour a test chooses; returns its port."""
    servers: list[asyncio.Server] = []
    connections: list[asyncio.StreamWriter] = []

    async def start(behaviour: str) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            await reader.read(1024)
            if behaviour == "garbage":
                writer.write(b"?this is not RESP\r\n")
            elif behaviour == "close":
                writer.close()
            elif behaviour == "extra":
                writer.write(b"+PONG\r\n+UNASKED\r\n")
            elif behaviour == "answer-once":
                writer.write(b"+PONG\r\n")
            await asyncio.sleep(30)  # "silent": never answer

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start  # type: ignore[misc]
    for writer in connections:
        writer.close()
    for server in servers:
        server.close()


async def test_a_silent_redis_times_out_and_the_connection_is_dropped(fake_server) -> None:  # noqa: ANN001
    wire = RedisWire(Endpoint(port=await fake_server("silent")), timeout_s=0.05)
    try:
        calls = [asyncio.ensure_future(wire.execute("PING")) for _ in range(3)]
        for call in calls:
            with pytest.raises(RedisTimeoutError):
                await call
        with pytest.raises(RedisTimeoutError):
            await wire.execute("PING")  # a new connection, silent again: no reply for the wrong caller
    finally:
        await wire.close()


async def test_a_call_behind_answered_ones_still_times_out(fake_server) -> None:  # noqa: ANN001
    """One watchdog per connection follows the oldest unanswered call, whoever armed it."""
    wire = RedisWire(Endpoint(port=await fake_server("answer-once")), timeout_s=0.2)
    try:
        assert await wire.execute("PING") == b"PONG"
        await asyncio.sleep(0.1)  # the first call's deadline passes while the next one waits
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RedisTimeoutError):
            await wire.execute("PING")
        assert 0.15 <= loop.time() - started < 1.0  # its own deadline, not the first call's
    finally:
        await wire.close()


@pytest.mark.parametrize("behaviour", ["garbage", "close", "extra"])
async def test_a_misbehaving_peer_is_a_connection_error(fake_server, behaviour: str) -> None:  # noqa: ANN001
    wire = RedisWire(Endpoint(port=await fake_server(behaviour)), timeout_s=0.5)
    try:
        if behaviour == "extra":
            assert await wire.execute("PING") == b"PONG"
            await asyncio.sleep(0.01)  # the reply nobody asked for arrives: that connection is dropped
            assert await wire.execute("PING") == b"PONG"  # on a new one
        else:
            with pytest.raises(RedisConnectionError):
                await wire.execute("PING")
    finally:
        await wire.close()


async def test_a_closed_wire_refuses_calls(redis_wire: RedisWire) -> None:
    assert await redis_wire.execute("PING") == b"PONG"
    await redis_wire.close()
    with pytest.raises(RedisConnectionError):
        await redis_wire.execute("PING")


def test_urls() -> None:
    assert Endpoint.parse("redis://127.0.0.1:6390/2") == Endpoint(port=6390, db=2)
    assert Endpoint.parse("rediss://user:p%40ss@cache.internal:6380/0") == Endpoint(
        host="cache.internal", port=6380, tls=True, username="user", password="p@ss"
    )
    assert Endpoint.parse("redis://:secret@localhost") == Endpoint(host="localhost", password="secret")
    assert Endpoint.parse("unix:///run/redis.sock?db=3") == Endpoint(unix_path="/run/redis.sock", db=3)
    with pytest.raises(ValueError):
        Endpoint.parse("http://127.0.0.1:6379")


async def _reads_processed(client: Redis) -> int:
    return int((await client.info("stats"))["total_reads_processed"])


async def test_a_deferred_call_travels_with_the_next_write_and_replies_stay_in_order(tmp_path) -> None:  # noqa: ANN001
    """A settlement may wait for company: it leaves in the next call's write (one read for Redis,
    not two) and every caller still gets its own reply."""
    server = start_redis(tmp_path / "redis", free_port())
    wire = RedisWire.from_url(server.url)
    client = Redis.from_url(server.url)
    try:
        assert await wire.execute("PING") == b"PONG"  # connected
        before = await _reads_processed(client)
        deferred = asyncio.ensure_future(wire.batch([("ECHO", "deferred"), ("INCR", "relay:{t}:d")], defer_s=5.0))
        await asyncio.sleep(0.05)  # several loop ticks: still waiting for company, not sent
        assert not deferred.done()
        assert await client.get("relay:{t}:d") is None
        now = await asyncio.gather(*(wire.execute("ECHO", f"now-{i}") for i in range(3)))
        assert now == [f"now-{i}".encode() for i in range(3)]
        assert await deferred == [b"deferred", 1]
        # The GET, the one write that carried the three calls and the deferred batch, and this INFO
        # (the first INFO counted itself).  Sent on its own, the deferred batch would make it 4.
        assert await _reads_processed(client) - before == 3
    finally:
        await client.aclose()
        await wire.close()
        server.stop()


async def test_a_deferred_call_alone_leaves_when_its_wait_is_over(redis_wire: RedisWire) -> None:
    loop = asyncio.get_running_loop()
    await redis_wire.execute("PING")
    started = loop.time()
    assert await redis_wire.script(COUNTER, ["relay:{t}:n"], [3], defer_s=0.05) == 3  # NOSCRIPT, loaded, again
    assert await redis_wire.script(COUNTER, ["relay:{t}:n"], [4], defer_s=0.05) == 7
    assert 0.09 <= loop.time() - started < 1.0


async def test_a_deferred_call_to_a_silent_redis_times_out(fake_server) -> None:  # noqa: ANN001
    """The watchdog covers a deferred call from its write: it fails, it does not hang."""
    wire = RedisWire(Endpoint(port=await fake_server("silent")), timeout_s=0.05)
    try:
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(wire.batch([("PING",)], defer_s=0.02), timeout=2)
    finally:
        await wire.close()


async def test_a_lost_connection_fails_the_calls_still_waiting_for_company(redis_wire: RedisWire) -> None:
    await redis_wire.execute("PING")
    deferred = asyncio.ensure_future(redis_wire.batch([("PING",)], defer_s=5.0))
    await asyncio.sleep(0.01)
    await redis_wire.close()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(deferred, timeout=2)
