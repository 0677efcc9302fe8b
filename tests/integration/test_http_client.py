"""Relay's own upstream client (``HttpClient``) beyond the shared interface:
its pool policy (idle connections closed to make room, keep-alive expiry),
back-pressure at ``HIGH_WATER`` and spoiled idle connections.  What both
implementations must do is in ``test_http_conformance.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from relay_server.errors import ErrorKind
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.http_connection import HIGH_WATER
from relay_server.providers.http_pool import Pool
from tests.support.raw_http import OK, Exchange, Upstream, failure, hang_after, request

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient.create()
    yield http
    await http.close()


async def test_garbage_on_an_idle_or_finished_connection_spoils_it(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(OK + b"HTTP/1.1 200 extra\r\n" if ex.req.conn == 0 else OK)
        return True

    async with Upstream(respond) as up:
        for _ in range(3):
            assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert [r.conn for r in up.requests] == [0, 1, 1]

async def test_back_pressure_pauses_reading_for_a_slow_consumer(client: HttpClient) -> None:
    frame = b"data: " + b"x" * 4000 + b"\n\n"
    count = 4000  # 16 MB: far more than the socket buffers hold

    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(frame) * count))
        for _ in range(count // 100):
            await ex.send(frame * 100)
        return True

    async with Upstream(respond) as up:
        async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 20) as stream:
            events = len(await stream.next_events() or [])
            conn = stream._conn
            assert conn is not None and conn.transport is not None
            while conn.transport.is_reading() and not conn._complete:  # the consumer is busy; data keeps coming
                await asyncio.sleep(0.005)
            assert not conn.transport.is_reading(), "reading paused before the whole body was buffered"
            assert conn._buffered <= HIGH_WATER + 256 * 1024, "buffered at most one read past the mark"
            while (more := await stream.next_events()) is not None:
                events += len(more)
            assert events == count
        assert up.connections == 1

async def test_at_the_total_limit_an_idle_connection_to_another_host_makes_room() -> None:
    client = HttpClient.create(max_connections=1)
    try:
        async with Upstream() as first, Upstream() as second:
            await client.send(request(first.url()), Timeouts(), 5)
            await client.send(request(second.url()), Timeouts(connect_s=1), 5)
            await asyncio.wait_for(first.hung_up.wait(), 5)  # its idle connection was closed for the new one
            assert (first.connections, second.connections) == (1, 1)
    finally:
        await client.close()

async def test_idle_connections_expire_and_close_closes_everything() -> None:
    loop = asyncio.get_running_loop()
    client = HttpClient(loop, Pool(loop, max_connections=0, max_per_host=0, keepalive_s=0.1))
    async with Upstream() as up:
        await client.send(request(up.url()), Timeouts(), 5)
        await asyncio.wait_for(up.hung_up.wait(), 5)  # closed after 0.1 s idle
        up.hung_up.clear()
        await client.send(request(up.url()), Timeouts(), 5)
        assert up.connections == 2
        hanging = Upstream(lambda ex: hang_after(ex, b""))
        async with hanging:
            pending = asyncio.create_task(client.send(request(hanging.url()), Timeouts(), 10))
            while not hanging.requests:
                await asyncio.sleep(0.01)
            await client.close()
            assert (await failure(pending)).kind is ErrorKind.PROVIDER_ERROR
            await asyncio.wait_for(hanging.hung_up.wait(), 5)
        await asyncio.wait_for(up.hung_up.wait(), 5)
        assert (await failure(client.send(request(up.url()), Timeouts(), 5))).kind is ErrorKind.PROVIDER_ERROR
