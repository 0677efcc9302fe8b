"""Connections that outlive the request that opened them do not keep it alive.

A pooled upstream connection, the pool's sweep timer and the per-worker Redis
connection are all first made while some request is served.  Before they were
made in a fresh context, each pinned that request's scope (and with it the
request's context, body and principal) for as long as it lived.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from relay_server.detached import detached
from relay_server.observability.request_context import bind_request, current
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.storage.redis.wire import RedisWire
from tests.support.raw_http import Upstream, request

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


class _Hub:
    """Stands in for the observability hub a request scope holds: something to watch die."""


async def _served(work) -> weakref.ref[_Hub]:  # type: ignore[no-untyped-def]
    hub = _Hub()
    with bind_request("req_pinned", "chat", hub):
        await work()
    return weakref.ref(hub)


async def test_a_pooled_upstream_connection_does_not_pin_the_request_that_dialled_it() -> None:
    client = HttpClient.create()
    try:
        async with Upstream() as up:
            watched = await _served(lambda: client.send(request(up.url()), Timeouts(), 5))
            gc.collect()
            assert watched() is None
            # ... while the connection it dialled (and the pool's sweep timer) are still alive and reused.
            assert (await client.send(request(up.url()), Timeouts(), 5)).status == 200
            assert up.connections == 1
    finally:
        await client.close()


async def test_an_upstream_stream_does_not_pin_its_request_after_it_ends() -> None:
    client = HttpClient.create()
    try:
        async with Upstream() as up:

            async def stream() -> None:
                async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 5) as response:
                    assert await response.read_body() == b"ok"

            watched = await _served(stream)
            gc.collect()
            assert watched() is None and up.connections == 1
    finally:
        await client.close()


async def test_the_redis_wire_does_not_pin_the_request_that_connected_it(redis_wire: RedisWire) -> None:
    watched = await _served(lambda: redis_wire.execute("PING"))
    gc.collect()
    assert watched() is None
    assert await redis_wire.execute("ECHO", "still connected") == b"still connected"


async def test_detached_work_runs_outside_the_request_and_is_cancelled_with_its_caller() -> None:
    seen: list[object] = []
    started, release = asyncio.Event(), asyncio.Event()
    closed: list[str] = []

    async def dial() -> str:
        seen.append(current())
        started.set()
        await release.wait()
        return "connection"

    with bind_request("req_outer", "chat"):
        assert await detached(lambda: _now("made"), discard=closed.append) == "made"
        waiter = asyncio.ensure_future(detached(dial, discard=closed.append))
        await started.wait()
        assert seen == [None]  # the request's scope is not visible inside
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert closed == []  # cancelled before anything was made: nothing to close


async def test_a_result_made_as_the_caller_is_cancelled_is_discarded() -> None:
    closed: list[str] = []
    made = asyncio.Event()

    async def dial() -> str:
        made.set()
        return "connection"

    waiter = asyncio.ensure_future(detached(dial, discard=closed.append))
    await made.wait()  # the dial task has finished; its waiter is scheduled but has not resumed
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert closed == ["connection"]


async def _now(value: str) -> str:
    return value
