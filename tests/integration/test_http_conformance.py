"""One conformance suite for both upstream HTTP clients (``RELAY_UPSTREAM_HTTP=native|aiohttp``)
over real loopback sockets: the request head, body framings, keep-alive, stale
connections, timeouts, hanging up, streams, limits, TLS, the egress proxy,
large bodies and malformed answers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relay_server.errors import ErrorKind
from relay_server.providers import http_connection
from relay_server.providers.http_client import Timeouts
from relay_server.providers.translator import UpstreamRequest
from relay_server.providers.upstream_http import IMPLEMENTATIONS, UpstreamHttp, build_upstream_http
from relay_server.settings import Settings
from tests.fakes.proxy import FakeProxy
from tests.support.raw_http import OK, Exchange, Upstream, chunked, failure, hang_after, request, tls_contexts

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

Make = Callable[..., UpstreamHttp]


@pytest.fixture(params=IMPLEMENTATIONS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Builds clients of one implementation (closed at the end of the test)."""
    made: list[UpstreamHttp] = []

    def build(**options: object) -> UpstreamHttp:
        settings = Settings(upstream_http=request.param, **{k: options.pop(k) for k in list(options) if k.endswith("proxy")})
        made.append(build_upstream_http(settings, **options))
        return made[-1]

    yield build
    for client in made:
        await client.close()


@pytest.fixture
async def client(make: Make) -> UpstreamHttp:
    return make()


# -- exchanges and keep-alive ---------------------------------------------------------------


async def test_keep_alive_reuses_one_connection_and_sends_a_clean_head(client: UpstreamHttp) -> None:
    async with Upstream() as up:
        for _ in range(20):
            resp = await client.send(request(up.url("/v1/x?a=1")), Timeouts(), 5)
            assert (resp.status, resp.body, resp.headers["CONTENT-TYPE"]) == (200, b"ok", "text/plain")
        assert up.connections == 1 and len(up.requests) == 20
        seen = up.requests[0]
        assert seen.head[0] == "POST /v1/x?a=1 HTTP/1.1"
        assert seen.headers["host"] == f"127.0.0.1:{up.port}" and seen.headers["authorization"] == "Bearer sk-test-1"
        assert seen.headers["user-agent"] == "relay-gateway" and seen.headers["accept-encoding"] == "identity"
        assert seen.headers["content-type"] == "application/json" and seen.body == b'{"model":"m","n":1}'
        custom = await client.send(request(up.url(), **{"Content-Type": "application/x-test", "User-Agent": "x"}), Timeouts(), 5)
        assert custom.status == 200 and up.requests[-1].headers["content-type"] == "application/x-test"
        assert up.requests[-1].headers["user-agent"] == "x"


async def test_a_get_has_no_body_headers(client: UpstreamHttp) -> None:
    async with Upstream() as up:
        resp = await client.send(UpstreamRequest("GET", up.url("/v1/models"), {"X-Key": "k"}), Timeouts(), 5)
        assert resp.body == b"ok"
        seen = up.requests[0]
        assert seen.head[0] == "GET /v1/models HTTP/1.1" and seen.headers["x-key"] == "k"
        assert "content-length" not in seen.headers and "content-type" not in seen.headers


async def test_header_injection_is_refused_before_any_io(client: UpstreamHttp) -> None:
    async with Upstream() as up:
        with pytest.raises(ValueError, match="CR or LF") as info:
            await client.send(request(up.url(), **{"X-Evil": "a\r\nX-Injected: 1"}), Timeouts(), 5)
        assert "Injected" not in str(info.value) and up.requests == []


@pytest.mark.parametrize("kind", ["chunked", "until-close", "http10"])
async def test_body_framings(client: UpstreamHttp, kind: str) -> None:
    payload = os.urandom(1000)

    async def respond(ex: Exchange) -> bool:
        if kind == "chunked":
            await ex.send(chunked(payload[:10], payload[10:], headers=b"X-A: 1\r\nx-a: 2\r\n"))
            return True
        version = b"HTTP/1.0" if kind == "http10" else b"HTTP/1.1"
        await ex.send(version + b" 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\n" + payload)
        return False  # the close ends the body

    async with Upstream(respond) as up:
        for _ in range(2):
            resp = await client.send(request(up.url()), Timeouts(), 5)
            assert resp.body == payload and resp.headers["x-a"] == "1, 2" and dict(resp.headers) == {"x-a": "1, 2"} | (
                {"transfer-encoding": "chunked"} if kind == "chunked" else {})
        assert up.connections == (1 if kind == "chunked" else 2)


@pytest.mark.parametrize("reply", [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                                   b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"], ids=["connection-close", "http10"])
async def test_a_connection_the_server_will_close_is_not_pooled(client: UpstreamHttp, reply: bytes) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(reply)
        return await ex.until_hangup()  # the server keeps it open: the client must close it

    async with Upstream(respond) as up:
        for _ in range(3):
            assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        await asyncio.wait_for(up.hung_up.wait(), 5)
        assert up.connections == 3


async def test_interim_responses_are_skipped(client: UpstreamHttp) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
        return True

    async with Upstream(respond) as up:
        resp = await client.send(request(up.url()), Timeouts(), 5)
        assert (resp.status, resp.body, "link" in resp.headers) == (200, b"ok", False)
        assert (await client.send(request(up.url()), Timeouts(), 5)).status == 200 and up.connections == 1


async def test_a_3mb_body(client: UpstreamHttp) -> None:
    payload = os.urandom(3 * 1024 * 1024)

    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        return True

    async with Upstream(respond) as up:
        resp = await client.send(request(up.url()), Timeouts(), 10)
        assert resp.status == 500 and resp.body == payload
        async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 10) as stream:
            assert stream.status == 500 and await stream.read_body() == payload
        assert up.connections == 1


# -- stale keep-alive connections --------------------------------------------------------------


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(client: UpstreamHttp) -> None:
    async def respond(ex: Exchange) -> bool:
        if ex.req.conn == 0 and len(ex.upstream.requests) == 2:
            return False  # closed as if idle: the request crossed the close, no byte answered
        await ex.send(OK)
        return True

    async with Upstream(respond) as up:
        assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert [r.conn for r in up.requests] == [0, 0, 1]


async def test_an_idle_connection_closed_by_the_server_is_not_used(client: UpstreamHttp) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(OK)
        return False

    async with Upstream(respond) as up:
        await client.send(request(up.url()), Timeouts(), 5)
        await asyncio.sleep(0.05)  # the FIN reaches the idle connection
        assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert [r.conn for r in up.requests] == [0, 1]


async def test_a_reused_connection_closed_long_after_the_request_is_not_retried(
        client: UpstreamHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_connection, "STALE_WINDOW_S", 0.05)

    async def respond(ex: Exchange) -> bool:
        if len(ex.upstream.requests) == 1:
            await ex.send(OK)
            return True
        await asyncio.sleep(0.2)  # "processing", then the connection is cut without a byte
        return False

    async with Upstream(respond) as up:
        await client.send(request(up.url()), Timeouts(), 5)
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and len(up.requests) == 2, "it may have been processed: not resent"


@pytest.mark.parametrize("reused", [False, True])
async def test_a_connection_lost_mid_response_is_not_retried(client: UpstreamHttp, reused: bool) -> None:
    async def respond(ex: Exchange) -> bool:
        if len(ex.upstream.requests) == 1 and reused:
            await ex.send(OK)
            return True
        await ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        return False

    async with Upstream(respond) as up:
        if reused:
            await client.send(request(up.url()), Timeouts(), 5)
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and err.retryable and err.upstream_message
        assert len(up.requests) == (2 if reused else 1), "sent once: some of the answer had arrived"


async def test_a_fresh_connection_closed_before_answering_is_not_retried(client: UpstreamHttp) -> None:
    async with Upstream(lambda ex: asyncio.sleep(0, False)) as up:
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and len(up.requests) == 1


async def test_malformed_status_line(client: UpstreamHttp) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n")
        return await ex.until_hangup()

    async with Upstream(respond) as up:
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and "malformed response" in (err.upstream_message or "")
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def test_connection_refused(client: UpstreamHttp) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        err = await failure(client.send(request(f"http://127.0.0.1:{sock.getsockname()[1]}/v1"), Timeouts(), 5))
    assert err.kind is ErrorKind.PROVIDER_ERROR and "ConnectionRefusedError" in (err.upstream_message or "")
    bad = await failure(client.send(request("ftp://example.invalid/x"), Timeouts(), 5))
    assert bad.kind is ErrorKind.PROVIDER_ERROR and "scheme" in (bad.upstream_message or "")


# -- timeouts and hanging up ------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "timeouts", "total"), [
    (b"", Timeouts(first_byte_s=0.2), 10),  # first byte
    (b"", Timeouts(), 0.3),  # total, before the headers
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", Timeouts(first_byte_s=0.1), 0.4),  # total, mid-body
], ids=["first-byte", "total-headers", "total-body"])
async def test_timeouts_hang_up(client: UpstreamHttp, sent: bytes, timeouts: Timeouts, total: float) -> None:
    async with Upstream(lambda ex: hang_after(ex, sent)) as up:
        err = await failure(client.send(request(up.url()), timeouts, total))
        assert err.kind is ErrorKind.REQUEST_TIMEOUT and err.retryable
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def trickle(ex: Exchange) -> bool:
    await ex.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await ex.send(b"%x\r\n%s\r\n" % (len(b"data: x\n\n"), b"data: x\n\n"))
        await asyncio.sleep(0.02)


async def test_total_timeout_spans_a_stream_that_never_goes_idle(client: UpstreamHttp) -> None:
    async with Upstream(trickle) as up:
        async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 0.3) as stream:
            err = await failure(_consume(stream))
        assert err.kind is ErrorKind.REQUEST_TIMEOUT


async def _consume(stream: object) -> None:
    while await stream.next_events() is not None:  # type: ignore[attr-defined]
        pass


async def test_idle_timeout_mid_stream(client: UpstreamHttp) -> None:
    async with Upstream(lambda ex: hang_after(ex, chunked(b"data: 1\n\n")[:-5])) as up:
        async with client.open_stream(request(up.url()), Timeouts(idle_s=0.2), 10) as stream:
            assert [e.data for e in await stream.next_events()] == ["1"]
            err = await failure(stream.next_events())
        assert err.kind is ErrorKind.REQUEST_TIMEOUT and "stalled" in err.message
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def test_streams_reuse_the_connection_once_read_to_the_end(client: UpstreamHttp) -> None:
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


async def test_leaving_a_stream_early_closes_the_connection(client: UpstreamHttp) -> None:
    async with Upstream(trickle) as up:
        async with client.open_stream(request(up.url()), Timeouts(), 10) as stream:
            assert await stream.next_events() is not None
        await asyncio.wait_for(up.hung_up.wait(), 5)
        async with client.open_stream(request(up.url()), Timeouts(), 10) as stream:
            await stream.next_events()
        assert up.connections == 2


async def test_cancelling_the_caller_closes_the_connection(client: UpstreamHttp) -> None:
    async with Upstream(lambda ex: hang_after(ex, b"")) as up:
        task = asyncio.create_task(client.send(request(up.url()), Timeouts(), 10))
        while not up.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(up.hung_up.wait(), 5)


# -- limits, concurrency, TLS, closing ----------------------------------------------------------------


async def test_concurrent_requests_use_separate_connections(client: UpstreamHttp) -> None:
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


async def test_max_per_host_makes_callers_wait_for_a_slot(make: Make) -> None:
    release = asyncio.Event()

    async def respond(ex: Exchange) -> bool:
        if len(ex.upstream.requests) == 1:
            await release.wait()
        await ex.send(OK)
        return True

    client = make(max_per_host=1)
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


async def test_https_with_a_self_signed_certificate(make: Make, tmp_path: Path) -> None:
    server_ctx, trusting = tls_contexts(tmp_path)
    client, untrusting = make(ssl_context=trusting), make()
    async with Upstream(tls=server_ctx) as up:
        for _ in range(3):
            resp = await client.send(request(up.url()), Timeouts(), 5)
            assert resp.body == b"ok"
        assert up.connections == 1 and up.requests[0].headers["host"] == f"localhost:{up.port}"
        err = await failure(untrusting.send(request(up.url()), Timeouts(), 5))
        assert "CERTIFICATE_VERIFY_FAILED" in (err.upstream_message or "")


async def test_back_pressure_stops_the_upstream_while_the_consumer_is_busy(client: UpstreamHttp) -> None:
    frame = b"data: " + b"x" * 4000 + b"\n\n"
    count = 4000  # 16 MB: far more than the socket buffers and the client's buffer hold
    sent = [0]

    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(frame) * count))
        for _ in range(count // 100):
            await ex.send(frame * 100)  # drain() blocks once the client stops reading
            sent[0] += len(frame) * 100
        return True

    async with Upstream(respond) as up:
        async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 20) as stream:
            events = len(await stream.next_events() or [])
            # The consumer is busy: wait (bounded) until the upstream can send no more.
            last, still = -1, 0
            for _ in range(500):
                await asyncio.sleep(0.01)
                still = still + 1 if sent[0] == last else 0
                last = sent[0]
                if still == 10:
                    break
            assert still == 10 and sent[0] < len(frame) * count // 2, "the upstream was held back, not buffered"
            while (more := await stream.next_events()) is not None:
                events += len(more)
            assert events == count and sent[0] == len(frame) * count
        assert up.connections == 1


# -- the egress proxy -----------------------------------------------------------------------------


async def test_http_upstreams_go_through_the_proxy_in_absolute_form(make: Make) -> None:
    async with FakeProxy(credentials=("alice", "s3cret")) as proxy, Upstream() as up:
        client = make(http_proxy=proxy.url("alice:s3cret"))
        for _ in range(3):
            assert (await client.send(request(up.url("/v1/x?a=1")), Timeouts(), 5)).body == b"ok"
        assert proxy.forwarded[0] == f"POST http://127.0.0.1:{up.port}/v1/x?a=1 HTTP/1.1"
        assert proxy.connections == 1 and up.connections == 1, "kept alive through the proxy"
        assert proxy.authorizations[0] == "Basic YWxpY2U6czNjcmV0" and proxy.refused == 0


async def test_https_upstreams_are_tunnelled_with_tls_inside(make: Make, tmp_path: Path) -> None:
    server_ctx, trusting = tls_contexts(tmp_path)
    async with FakeProxy(credentials=("alice", "s3cret")) as proxy, Upstream(tls=server_ctx) as up:
        client = make(ssl_context=trusting, https_proxy=proxy.url("alice:s3cret"))
        for _ in range(3):
            assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        async with client.open_stream(request(up.url()), Timeouts(idle_s=5), 5) as stream:
            assert stream.status == 200 and await stream.read_body() == b"ok"
        assert proxy.tunnels == [f"localhost:{up.port}"], "one tunnel, reused"
        assert up.connections == 1 and up.requests[0].headers["host"] == f"localhost:{up.port}"
        assert "proxy-authorization" not in up.requests[0].headers, "the proxy's credentials stay with the proxy"


async def test_a_proxy_refusing_credentials_is_a_clear_provider_error(make: Make, tmp_path: Path) -> None:
    server_ctx, trusting = tls_contexts(tmp_path)
    async with FakeProxy(credentials=("alice", "s3cret")) as proxy, Upstream(tls=server_ctx) as up:
        client = make(ssl_context=trusting, https_proxy=proxy.url("alice:wrong"))
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and "egress proxy refused" in err.message
        assert "407" in (err.upstream_message or "") and "wrong" not in (err.upstream_message or "")
        assert proxy.refused == 1 and up.connections == 0


async def test_no_proxy_hosts_are_dialled_directly_and_pooled_apart(make: Make) -> None:
    async with FakeProxy() as proxy, Upstream() as up:
        direct = make(http_proxy=proxy.url(), no_proxy=f"example.com,127.0.0.1:{up.port}")
        proxied = make(http_proxy=proxy.url(), no_proxy=f"127.0.0.1:{up.port + 1},.0.0.1")
        await direct.send(request(up.url()), Timeouts(), 5)
        assert proxy.connections == 0 and up.connections == 1
        await proxied.send(request(up.url()), Timeouts(), 5)
        assert proxy.connections == 1 and up.connections == 2
        assert up.requests[0].head[0].startswith("POST /v1/") and up.requests[1].head[0].startswith("POST http://")


async def test_an_unreachable_proxy_is_a_connection_failure(make: Make) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        client = make(https_proxy=f"http://127.0.0.1:{sock.getsockname()[1]}")
        err = await failure(client.send(request("https://localhost:1/v1"), Timeouts(), 5))
    assert err.kind is ErrorKind.PROVIDER_ERROR and "ConnectionRefusedError" in (err.upstream_message or "")
