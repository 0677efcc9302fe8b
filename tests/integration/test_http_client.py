"""HttpClient exchanges over real loopback sockets: the request head, body
framings, keep-alive and its limits, stale connections, malformed answers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from relay_server.errors import ErrorKind
from relay_server.providers import http_connection
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.translator import UpstreamRequest
from tests.support.raw_http import OK, Exchange, Upstream, chunked, failure, request

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient.create()
    yield http
    await http.close()


# -- exchanges and keep-alive ---------------------------------------------------------------


async def test_keep_alive_reuses_one_connection_and_sends_a_clean_head(client: HttpClient) -> None:
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


async def test_a_get_has_no_body_headers(client: HttpClient) -> None:
    async with Upstream() as up:
        resp = await client.send(UpstreamRequest("GET", up.url("/v1/models"), {"X-Key": "k"}), Timeouts(), 5)
        assert resp.body == b"ok"
        seen = up.requests[0]
        assert seen.head[0] == "GET /v1/models HTTP/1.1" and seen.headers["x-key"] == "k"
        assert "content-length" not in seen.headers and "content-type" not in seen.headers


async def test_header_injection_is_refused_before_any_io(client: HttpClient) -> None:
    async with Upstream() as up:
        with pytest.raises(ValueError, match="CR or LF") as info:
            await client.send(request(up.url(), **{"X-Evil": "a\r\nX-Injected: 1"}), Timeouts(), 5)
        assert "Injected" not in str(info.value) and up.requests == []


@pytest.mark.parametrize("kind", ["chunked", "until-close", "http10"])
async def test_body_framings(client: HttpClient, kind: str) -> None:
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
async def test_a_connection_the_server_will_close_is_not_pooled(client: HttpClient, reply: bytes) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(reply)
        return await ex.until_hangup()  # the server keeps it open: the client must close it

    async with Upstream(respond) as up:
        for _ in range(3):
            assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        await asyncio.wait_for(up.hung_up.wait(), 5)
        assert up.connections == 3


async def test_interim_responses_are_skipped(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
        return True

    async with Upstream(respond) as up:
        resp = await client.send(request(up.url()), Timeouts(), 5)
        assert (resp.status, resp.body, "link" in resp.headers) == (200, b"ok", False)
        assert (await client.send(request(up.url()), Timeouts(), 5)).status == 200 and up.connections == 1


async def test_a_3mb_body(client: HttpClient) -> None:
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


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        if ex.req.conn == 0 and len(ex.upstream.requests) == 2:
            return False  # closed as if idle: the request crossed the close, no byte answered
        await ex.send(OK)
        return True

    async with Upstream(respond) as up:
        assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert [r.conn for r in up.requests] == [0, 0, 1]


async def test_an_idle_connection_closed_by_the_server_is_not_used(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(OK)
        return False

    async with Upstream(respond) as up:
        await client.send(request(up.url()), Timeouts(), 5)
        await asyncio.sleep(0.05)  # the FIN reaches the idle connection
        assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert [r.conn for r in up.requests] == [0, 1]


async def test_a_reused_connection_closed_long_after_the_request_is_not_retried(
        client: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
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
async def test_a_connection_lost_mid_response_is_not_retried(client: HttpClient, reused: bool) -> None:
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


async def test_a_fresh_connection_closed_before_answering_is_not_retried(client: HttpClient) -> None:
    async with Upstream(lambda ex: asyncio.sleep(0, False)) as up:
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and len(up.requests) == 1


async def test_garbage_on_an_idle_or_finished_connection_spoils_it(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(OK + b"HTTP/1.1 200 extra\r\n" if ex.req.conn == 0 else OK)
        return True

    async with Upstream(respond) as up:
        for _ in range(3):
            assert (await client.send(request(up.url()), Timeouts(), 5)).body == b"ok"
        assert [r.conn for r in up.requests] == [0, 1, 1]


async def test_malformed_status_line(client: HttpClient) -> None:
    async def respond(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n")
        return await ex.until_hangup()

    async with Upstream(respond) as up:
        err = await failure(client.send(request(up.url()), Timeouts(), 5))
        assert err.kind is ErrorKind.PROVIDER_ERROR and "malformed response" in (err.upstream_message or "")
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def test_connection_refused(client: HttpClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        err = await failure(client.send(request(f"http://127.0.0.1:{sock.getsockname()[1]}/v1"), Timeouts(), 5))
    assert err.kind is ErrorKind.PROVIDER_ERROR and "ConnectionRefusedError" in (err.upstream_message or "")
    bad = await failure(client.send(request("ftp://example.invalid/x"), Timeouts(), 5))
    assert bad.kind is ErrorKind.PROVIDER_ERROR and "scheme" in (bad.upstream_message or "")
