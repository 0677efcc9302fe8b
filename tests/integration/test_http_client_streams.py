"""HttpClient timeouts, streams (back-pressure, hanging up), connection limits,
TLS and closing, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay_server.errors import ErrorKind
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.http_connection import HIGH_WATER
from relay_server.providers.http_pool import Pool
from tests.support.raw_http import OK, Exchange, Upstream, chunked, failure, hang_after, request, tls_contexts

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient.create()
    yield http
    await http.close()


# -- timeouts and hanging up ------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "timeouts", "total"), [
    (b"", Timeouts(first_byte_s=0.2), 10),  # first byte
    (b"", Timeouts(), 0.3),  # total, before the headers
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", Timeouts(first_byte_s=0.1), 0.4),  # total, mid-body
], ids=["first-byte", "total-headers", "total-body"])
async def test_timeouts_hang_up(client: HttpClient, sent: bytes, timeouts: Timeouts, total: float) -> None:
    async with Upstream(lambda ex: hang_after(ex, sent)) as up:
        err = await failure(client.send(request(up.url()), timeouts, total))
        assert err.kind is ErrorKind.REQUEST_TIMEOUT and err.retryable
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def trickle(ex: Exchange) -> bool:
    await ex.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await ex.send(b"%x\r\n%s\r\n" % (len(b"data: x\n\n"), b"data: x\n\n"))
        await asyncio.sleep(0.02)


async def test_total_timeout_spans_a_stream_that_never_goes_idle(client: HttpClient) -> None:
    async with Upstream(trickle) as up:
        async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 0.3) as stream:
            err = await failure(_consume(stream))
        assert err.kind is ErrorKind.REQUEST_TIMEOUT


async def _consume(stream: object) -> None:
    while await stream.next_events() is not None:  # type: ignore[attr-defined]
        pass


async def test_idle_timeout_mid_stream(client: HttpClient) -> None:
    async with Upstream(lambda ex: hang_after(ex, chunked(b"data: 1\n\n")[:-5])) as up:
        async with client.open_stream(request(up.url()), Timeouts(idle_s=0.2), 10) as stream:
            assert [e.data for e in await stream.next_events()] == ["1"]
            err = await failure(stream.next_events())
        assert err.kind is ErrorKind.REQUEST_TIMEOUT and "stalled" in err.message
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def test_streams_reuse_the_connection_once_read_to_the_end(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(chunked(b"data: a\n\ndata:", b" b\n\n", b"data: [DONE]\n\n"))
        return True

    async with Upstream(respond) as up:
        for _ in range(3):
            async with client.open_stream(request(up.url()), Timeouts(idle_s=1), 5) as stream:
                events = [e.data for e in await stream.next_events() or []]
                while (more := await stream.next_events()) is not None:
                    events += [e.data for e in more]
                assert events == ["a", "b", "[DONE]"]
        assert up.connections == 1


async def test_leaving_a_stream_early_closes_the_connection(client: HttpClient) -> None:
    async with Upstream(trickle) as up:
        async with client.open_stream(request(up.url()), Timeouts(), 10) as stream:
            assert await stream.next_events() is not None
        await asyncio.wait_for(up.hung_up.wait(), 5)
        async with client.open_stream(request(up.url()), Timeouts(), 10) as stream:
            await stream.next_events()
        assert up.connections == 2


async def test_cancelling_the_caller_closes_the_connection(client: HttpClient) -> None:
    async with Upstream(lambda ex: hang_after(ex, b"")) as up:
        task = asyncio.create_task(client.send(request(up.url()), Timeouts(), 10))
        while not up.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(up.hung_up.wait(), 5)


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


# -- limits, concurrency, TLS, closing ----------------------------------------------------------------


async def test_concurrent_requests_use_separate_connections(client: HttpClient) -> None:
    all_in = asyncio.Event()

    async def respond(ex: Exchange) -> bool:
        if len(ex.upstream.requests) == 8:
            all_in.set()
        await all_in.wait()  # answers only once all eight are in flight at once
        await ex.send(OK)
        return True

    async with Upstream(respond) as up:
        results = await asyncio.gather(*(client.send(request(up.url()), Timeouts(), 5) for _ in range(8)))
        assert [r.body for r in results] == [b"ok"] * 8 and up.connections == 8
        await asyncio.gather(*(client.send(request(up.url()), Timeouts(), 5) for _ in range(8)))
        assert up.connections == 8, "the second wave reuses the pooled connections"


async def test_max_per_host_makes_callers_wait_for_a_slot() -> None:
    release = asyncio.Event()

    async def respond(ex: Exchange) -> bool:
        if len(ex.upstream.requests) == 1:
            await release.wait()
        await ex.send(OK)
        return True

    client = HttpClient.create(max_per_host=1)
    try:
        async with Upstream(respond) as up:
            first = asyncio.create_task(client.send(request(up.url()), Timeouts(), 10))
            while not up.requests:
                await asyncio.sleep(0.01)
            timed_out = await failure(client.send(request(up.url()), Timeouts(connect_s=0.1), 10))
            assert timed_out.kind is ErrorKind.REQUEST_TIMEOUT, "waiting for a slot is bounded by connect_s"
            second = asyncio.create_task(client.send(request(up.url()), Timeouts(), 10))
            await asyncio.sleep(0.05)
            assert len(up.requests) == 1 and up.connections == 1, "the second request waits"
            release.set()
            assert [r.body for r in await asyncio.gather(first, second)] == [b"ok", b"ok"]
            assert up.connections == 1 and len(up.requests) == 2
    finally:
        await client.close()



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


async def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    server_ctx, trusting = tls_contexts(tmp_path)
    client = HttpClient.create(ssl_context=trusting)
    untrusting = HttpClient.create()
    try:
        async with Upstream(tls=server_ctx) as up:
            for _ in range(3):
                resp = await client.send(request(up.url()), Timeouts(), 5)
                assert resp.body == b"ok"
            assert up.connections == 1 and up.requests[0].headers["host"] == f"localhost:{up.port}"
            err = await failure(untrusting.send(request(up.url()), Timeouts(), 5))
            assert "CERTIFICATE_VERIFY_FAILED" in (err.upstream_message or "")
    finally:
        await client.close()
        await untrusting.close()


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
