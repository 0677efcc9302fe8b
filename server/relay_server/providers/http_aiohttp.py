"""The library-backed upstream client (``RELAY_UPSTREAM_HTTP=aiohttp``).

The same interface and guarantees as Relay's own ``HttpClient`` (``send``,
``open_stream`` and its stream object; timeouts; back-pressure; hanging up on
timeouts, errors and cancellation; one retry for a stale keep-alive
connection; the egress proxy), built on aiohttp's connection pool.  It exists
as a second, widely used implementation to fall back on and to measure the
native client against; both pass one conformance suite
(``tests/integration/test_http_conformance.py``).

Differences kept on purpose: aiohttp's pool counts busy connections only
against its limits (idle ones are not closed to make room), and it sends the
request head and body in separate writes.  Nothing here logs headers or bodies.

Tenant-chosen destinations (guarded requests) go through a second session
whose resolver hands aiohttp only the addresses the address policy allows: the
address checked is the address dialled (a name re-pointed between a check and
the connection gains nothing), and those connections never share a pool with
an operator's providers.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver

from relay_server.address_policy import allowed_addresses, refused_message
from relay_server.providers import http_connection
from relay_server.providers.http_client import PROXY_REFUSED, Timeouts, UpstreamResponse, _describe
from relay_server.providers.http_connection import HIGH_WATER
from relay_server.providers.http_message import ResponseHeaders, Target, parse_target
from relay_server.providers.http_proxy import ProxyRoutes
from relay_server.providers.sse import SSEEvent, SSEParser
from relay_server.providers.translator import UpstreamRequest, connection_failure, malformed_failure, timeout_failure
from relay_server.webhook_destinations import GuardedResolver, refusal_of

_DRAIN_S = 0.5
_TARGET_CACHE_SIZE = 1024
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _Route:
    """One URL, parsed and routed once: its target and the proxy arguments for aiohttp."""

    __slots__ = ("target", "proxy", "proxy_headers", "request_headers")

    def __init__(self, target: Target) -> None:
        self.target = target
        proxy = target.key[3]
        self.proxy = proxy.url if proxy is not None else None
        auth = {"Proxy-Authorization": proxy.authorization} if proxy is not None and proxy.authorization else None
        # aiohttp sends proxy_headers on CONNECT only; a plain-http request to the proxy carries them itself.
        self.proxy_headers = auth if target.tls else None
        self.request_headers = auth if not target.tls else None


class _Attempt:
    """Per-request trace context: did aiohttp hand us a pooled connection?"""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


async def _on_reuse(session: object, ctx: Any, params: object) -> None:
    attempt = ctx.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.reused = True


class AiohttpClient:
    __slots__ = ("_allow_private", "_connect_timeouts", "_guarded_session", "_loop", "_pool_options", "_routes", "_session",
                 "_targets")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession, routes: ProxyRoutes | None,
        allow_private: bool = False,
        pool_options: tuple[int, int, ssl.SSLContext | None] = (512, 0, None),
    ) -> None:
        self._loop = loop
        self._allow_private = allow_private
        self._session = session
        self._guarded_session: aiohttp.ClientSession | None = None  # made on the first guarded request
        self._pool_options = pool_options  # (max connections, per host, TLS) for the guarded session
        self._routes = routes if routes is not None and routes.configured else None
        self._targets: dict[str, _Route] = {}
        self._connect_timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @classmethod
    def create(
        cls,
        *,
        max_connections: int = 512,
        max_per_host: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxyRoutes | None = None,
        allow_private: bool = False,
    ) -> AiohttpClient:
        """Build the shared client inside the running loop (same arguments as ``HttpClient.create``)."""
        pool = (max_connections, max_per_host, ssl_context)
        return cls(asyncio.get_running_loop(), _session(*pool), proxies, allow_private, pool)

    async def close(self) -> None:
        await self._session.close()
        if self._guarded_session is not None:
            await self._guarded_session.close()

    def _session_for(self, req: UpstreamRequest, route: _Route) -> aiohttp.ClientSession:
        if not req.guarded or route.proxy is not None:
            return self._session
        if self._guarded_session is None:
            self._guarded_session = _session(*self._pool_options, resolver=GuardedResolver(allow_private=self._allow_private))
        return self._guarded_session

    async def send(self, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> UpstreamResponse:
        resp, deadline = await self._start(req, timeouts, total_s)
        try:
            async with asyncio.timeout_at(deadline):
                body = await resp.read()
        except BaseException as exc:
            resp.close()
            _raise_body_failure(exc)
            raise
        resp.release()
        return UpstreamResponse(resp.status, ResponseHeaders(list(resp.raw_headers)), body)

    def open_stream(self, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> AiohttpStream:
        return AiohttpStream(self, req, timeouts, total_s)

    def _route(self, url: str) -> _Route:
        route = self._targets.get(url)
        if route is None:
            try:
                route = _Route(parse_target(url, self._routes))
            except ValueError as exc:
                raise connection_failure(f"invalid upstream URL: {exc}") from None
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()
            self._targets[url] = route
        return route

    async def _vet(self, target: Target) -> None:
        """A tenant-chosen host must resolve only to addresses the policy allows (a check; the
        guarded session's ``GuardedResolver`` is what pins the address dialled)."""
        _, host, port, _ = target.key
        try:
            infos = await self._loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise connection_failure(_describe(exc)) from None
        allowed, refused = allowed_addresses([str(info[4][0]) for info in infos], allow_private=self._allow_private)
        if not allowed:
            raise connection_failure(refused_message(host, refused) if refused else f"destination {host} has no address")

    async def _start(
        self, req: UpstreamRequest, timeouts: Timeouts, total_s: float
    ) -> tuple[aiohttp.ClientResponse, float | None]:
        """Send ``req`` and wait for the response headers; returns the response
        and the call's deadline (``None``: none)."""
        now = self._loop.time()
        deadline = now + total_s
        headers_by = deadline if timeouts.first_byte_s is None else min(deadline, now + timeouts.first_byte_s)
        route = self._route(req.url)
        if req.guarded:
            # aiohttp skips its resolver for an address literal, and through the egress proxy the
            # proxy dials the name: check here too (a name dialled directly is also pinned).
            await self._vet(route.target)
        session = self._session_for(req, route)
        headers = _headers(req)
        if route.request_headers:
            headers.update(route.request_headers)
        body = orjson.dumps(req.json_body) if req.json_body is not None else None
        if body is None and req.method in _BODY_METHODS:
            body = b""
        connect = self._connect_timeouts.get(timeouts.connect_s)
        if connect is None:
            connect = self._connect_timeouts.setdefault(timeouts.connect_s, aiohttp.ClientTimeout(connect=timeouts.connect_s))
        retried = False
        while True:
            attempt = _Attempt()
            try:
                async with asyncio.timeout_at(headers_by):
                    resp = await session.request(
                        req.method, req.url, data=body, headers=headers,
                        proxy=route.proxy, proxy_headers=route.proxy_headers, timeout=connect,
                        allow_redirects=False, trace_request_ctx=attempt,
                    )  # fmt: skip
                return resp, deadline
            except TimeoutError:
                raise timeout_failure() from None
            except aiohttp.ClientHttpProxyError as exc:
                raise connection_failure(f"the proxy refused the tunnel: {exc.status} {exc.message}", PROXY_REFUSED) from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise connection_failure(_describe(exc.certificate_error)) from None
            except aiohttp.ClientConnectorError as exc:
                refusal = refusal_of(exc)
                if refusal is not None:
                    raise connection_failure(refusal) from None
                raise connection_failure(_describe(exc.os_error)) from None
            except aiohttp.ClientResponseError as exc:
                raise malformed_failure(f"malformed response: {exc.message}") from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled connection the server closed while idle, crossed by our request.
                if attempt.reused and not retried and self._loop.time() - now < http_connection.STALE_WINDOW_S:
                    retried = True
                    continue
                raise connection_failure(_describe(exc)) from None
            except aiohttp.ClientError as exc:
                raise connection_failure(_describe(exc)) from None


def _session(
    max_connections: int, max_per_host: int, ssl_context: ssl.SSLContext | None, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=max_per_host, ssl=ssl_context if ssl_context is not None else True,
        resolver=resolver,
    )
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_on_reuse)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # Relay relays bytes; it asks for identity anyway
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),  # deadlines are ours (see _start)
        trust_env=False,  # the proxy comes from settings, not from aiohttp reading os.environ
        trace_configs=[trace],
        # aiohttp pauses the socket at twice this many unread bytes: HIGH_WATER, as the native client.
        read_bufsize=HIGH_WATER // 2,
    )


def _raise_body_failure(exc: BaseException) -> None:
    if isinstance(exc, TimeoutError):
        raise timeout_failure() from None
    if isinstance(exc, (aiohttp.ClientError, ConnectionError)):
        raise connection_failure(_describe(exc)) from None


def _headers(req: UpstreamRequest) -> dict[str, str]:
    """The caller's headers under the same rules as ``http_message.encode_request``."""
    if req.method == "HEAD":
        raise ValueError("HEAD requests are not supported")
    headers: dict[str, str] = {}
    for name, value in req.headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError("a request header name or value contains CR or LF")
        if name.lower() not in _OWN_HEADERS:
            headers[name] = value
    lower = {name.lower() for name in headers}
    if "user-agent" not in lower:
        headers["User-Agent"] = "relay-gateway"
    if req.json_body is not None and "content-type" not in lower:
        headers["Content-Type"] = "application/json"
    headers["Accept-Encoding"] = "identity"
    return headers


class AiohttpStream:
    """The streaming response: the same API as ``http_client.UpstreamStream``."""

    __slots__ = ("_client", "_req", "_timeouts", "_total_s", "_resp", "_deadline", "_parser", "status", "headers")

    def __init__(self, client: AiohttpClient, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> None:
        self._client = client
        self._req = req
        self._timeouts = timeouts
        self._total_s = total_s
        self._resp: aiohttp.ClientResponse | None = None
        self._deadline: float | None = None
        self._parser = SSEParser()
        self.status = 0
        self.headers: Mapping[str, str] = ResponseHeaders([])

    async def __aenter__(self) -> AiohttpStream:
        self._resp, self._deadline = await self._client._start(self._req, self._timeouts, self._total_s)
        self.status = self._resp.status
        self.headers = ResponseHeaders(list(self._resp.raw_headers))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        resp, self._resp = self._resp, None
        if resp is None:
            return
        if resp.content.at_eof() and exc_type is None:
            resp.release()  # read to its end: the connection goes back to the pool
        else:
            resp.close()  # left early: hang up so the provider stops generating

    def _read_by(self) -> float | None:
        idle = self._timeouts.idle_s
        if idle is None:
            return self._deadline
        by = self._client._loop.time() + idle
        return by if self._deadline is None else min(by, self._deadline)

    async def read_body(self) -> bytes:
        resp = self._live()
        try:
            async with asyncio.timeout_at(self._deadline):
                return await resp.read()
        except BaseException as exc:
            resp.close()
            _raise_body_failure(exc)
            raise

    async def next_events(self) -> list[SSEEvent] | None:
        resp = self._live()
        try:
            async with asyncio.timeout_at(self._read_by()):
                chunk = await resp.content.readany()
        except TimeoutError:
            resp.close()
            raise timeout_failure("the upstream provider stalled mid-stream") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            resp.close()
            raise connection_failure(_describe(exc), "the connection to the upstream provider was lost mid-stream") from None
        if not chunk:
            return None
        return self._parser.feed(chunk)

    async def drain(self) -> None:
        resp = self._live()
        try:
            async with asyncio.timeout(_DRAIN_S):
                while await resp.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass  # the exit closes it

    def _live(self) -> aiohttp.ClientResponse:
        if self._resp is None:
            raise RuntimeError("the stream is not open (use `async with client.open_stream(...)`)")
        return self._resp
