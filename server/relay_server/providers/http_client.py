"""The one outbound HTTP client every HTTP provider shares.

One ``HttpClient`` (created at start-up by the composition root and passed in)
keeps a keep-alive connection pool across providers: HTTP/1.1 over TCP, or TLS
for https (system trust store, SNI, ALPN ``http/1.1``).  It is Relay's own lean
client (asyncio protocol + httptools, see ``http_connection``) because this is
the hot path of every live request.  Transport failures become
``ProviderFailure`` here, so translators only ever see HTTP statuses and bodies.

With an egress proxy configured (``http_proxy``: ``HTTPS_PROXY`` / ``HTTP_PROXY``
/ ``NO_PROXY``), each URL is routed once when first parsed: https through a
CONNECT tunnel, http in absolute form; pooled under a key naming the proxy.
``RELAY_UPSTREAM_HTTP=aiohttp`` swaps this client for ``http_aiohttp`` (same
interface, see ``upstream_http``).

Timeouts per call: ``connect_s`` (waiting for a pool slot, TCP and TLS),
``first_byte_s`` (from the call's start until the response headers),
``idle_s`` (streams: longest silence between two reads, from the request on)
and the call's own total (``ProviderCall.timeout_s``), which covers the body
reads too.  A timeout, an error or a caller that leaves early closes the
connection at once.

One retry, only for a stale keep-alive connection: the server closed it while
idle and the close crossed our request, so the request was never processed
(``Connection.stale_failure``).  Every other failure is the router's to retry.

Nothing here logs headers or bodies: they carry credentials and prompts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import orjson

from relay_server.providers.http_connection import INFINITY, Connection, ConnectionBroken
from relay_server.providers.http_message import ResponseHeaders, Target, encode_request, parse_target
from relay_server.providers.http_pool import Pool
from relay_server.providers.http_proxy import ProxyRefused, ProxyRoutes
from relay_server.providers.sse import SSEEvent, SSEParser
from relay_server.providers.translator import (
    UpstreamRequest,
    connection_failure,
    timeout_failure,
)

log = logging.getLogger(__name__)

# After a stream's end marker the body should end at once; wait at most this long
# for the terminator so the connection can go back to the pool, else close it.
_DRAIN_S = 0.5
# What the caller sees when the egress proxy refuses the tunnel (407: its credentials).
PROXY_REFUSED = "the egress proxy refused the connection to the upstream provider"
# Parsed URLs by URL string: providers call a handful of URLs over and over.
_TARGET_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float | None = None
    """``None``: bounded only by the call's total timeout."""
    idle_s: float | None = None
    """Longest silence between two reads of a body; ``None``: total only."""


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpClient:
    __slots__ = ("_loop", "_pool", "_targets", "_routes")

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: Pool, routes: ProxyRoutes | None = None) -> None:
        self._loop = loop
        self._pool = pool
        self._targets: dict[str, Target] = {}
        # None unless a proxy is configured: then each URL is routed once, when first parsed.
        self._routes = routes if routes is not None and routes.configured else None

    @classmethod
    def create(
        cls,
        *,
        max_connections: int = 512,
        max_per_host: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxyRoutes | None = None,
        allow_private: bool = False,
    ) -> HttpClient:
        """Build the shared client.  Call inside the running event loop.

        ``max_connections`` / ``max_per_host``: 0 means unlimited.
        ``ssl_context``: ``None`` for the system trust store (tests pass one
        trusting their own certificate).  ``proxies``: the egress proxy routes
        (``http_proxy``), ``None`` for direct connections only.  ``allow_private``: guarded
        requests (tenant-chosen hosts) may reach loopback/private addresses too."""
        loop = asyncio.get_running_loop()
        pool = Pool(loop, max_connections=max_connections, max_per_host=max_per_host, ssl_context=ssl_context,
                    allow_private=allow_private)  # fmt: skip
        return cls(loop, pool, proxies)

    async def close(self) -> None:
        await self._pool.close()

    async def send(self, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> UpstreamResponse:
        """A whole request/response exchange (non-streaming calls, error bodies)."""
        conn, body = await self._exchange(req, timeouts, total_s, stream=False)
        response = UpstreamResponse(conn.status, ResponseHeaders(conn.raw_headers), body)
        self._pool.release(conn)
        return response

    def open_stream(self, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> UpstreamStream:
        """Open a streaming response: ``async with client.open_stream(...) as stream``.

        Leaving the block early (error, client gone, task cancelled) closes the
        upstream connection at once, so the provider stops generating tokens
        nobody will read."""
        return UpstreamStream(self, req, timeouts, total_s)

    async def _exchange(
        self, req: UpstreamRequest, timeouts: Timeouts, total_s: float, *, stream: bool
    ) -> tuple[Connection, bytes]:
        """Send ``req`` and wait for the whole response (``stream=False``) or its
        headers (``stream=True``, body ``b""``).  The connection is the caller's
        to ``release`` on success; on failure it is already discarded."""
        loop = self._loop
        now = loop.time()
        deadline = now + total_s
        first_byte_at = now + timeouts.first_byte_s if timeouts.first_byte_s is not None else INFINITY
        target, payload = self._encode(req)
        pool = self._pool
        fresh = False
        while True:
            conn = None if fresh else pool.take_idle(target.key, now, req.guarded)
            if conn is None:
                conn = await self._connect(target, min(now + timeouts.connect_s, first_byte_at, deadline), req.guarded)
            conn.start(payload, deadline, first_byte_at, timeouts.idle_s if stream else None, stream=stream)
            try:
                if stream:
                    await conn.wait_headers()
                    body = b""
                else:
                    body = await conn.read_whole()
            except ConnectionBroken as exc:
                pool.discard(conn)
                if not fresh and conn.stale_failure(loop.time() - now):
                    fresh = True
                    continue
                raise connection_failure(str(exc)) from None
            except TimeoutError:
                pool.discard(conn)
                raise timeout_failure() from None
            except BaseException:  # cancelled: hang up now
                pool.discard(conn)
                raise
            if log.isEnabledFor(logging.DEBUG):
                log.debug("upstream %s %s%s -> %d", req.method, target.host_header, target.log_path, conn.status)
            return conn, body

    def _encode(self, req: UpstreamRequest) -> tuple[Target, bytes]:
        target = self._targets.get(req.url)
        if target is None:
            try:
                target = parse_target(req.url, self._routes)
            except ValueError as exc:
                raise connection_failure(f"invalid upstream URL: {exc}") from None
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()
            self._targets[req.url] = target
        body = orjson.dumps(req.json_body) if req.json_body is not None else None
        # A header with CR/LF raises ValueError: a bug or a corrupt credential, not the upstream's fault.
        return target, encode_request(req.method, target, req.headers, body)

    async def _connect(self, target: Target, limit_at: float, vetted: bool) -> Connection:
        try:
            return await self._pool.connect(target.key, limit_at, vetted)
        except TimeoutError:
            raise timeout_failure() from None
        except ProxyRefused as exc:
            raise connection_failure(str(exc), PROXY_REFUSED) from None
        except ConnectionBroken as exc:
            raise connection_failure(str(exc)) from None
        except (OSError, ValueError) as exc:  # refused, DNS, TLS (ssl errors are OSErrors)
            raise connection_failure(_describe(exc)) from None


class UpstreamStream:
    """A streaming response, read as SSE events as they arrive (no buffering
    beyond ``HIGH_WATER`` unread bytes: then the socket is not read)."""

    __slots__ = ("_client", "_req", "_timeouts", "_total_s", "_conn", "_parser", "status", "headers")

    def __init__(self, client: HttpClient, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> None:
        self._client = client
        self._req = req
        self._timeouts = timeouts
        self._total_s = total_s
        self._conn: Connection | None = None
        self._parser = SSEParser()
        self.status = 0
        self.headers: Mapping[str, str] = ResponseHeaders([])

    async def __aenter__(self) -> UpstreamStream:
        conn, _ = await self._client._exchange(self._req, self._timeouts, self._total_s, stream=True)
        self._conn = conn
        self.status = conn.status
        self.headers = ResponseHeaders(conn.raw_headers)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._pool.release(conn)  # pooled only if the body was read to its end

    async def read_body(self) -> bytes:
        """The whole body (used for error responses, which are not streams)."""
        conn = self._live()
        parts: list[bytes] = []
        try:
            while chunk := await conn.read_some():
                parts.append(chunk)
        except TimeoutError:
            raise timeout_failure() from None
        except ConnectionBroken as exc:
            raise connection_failure(str(exc)) from None
        return b"".join(parts)

    async def next_events(self) -> list[SSEEvent] | None:
        """Events completed by the next network read; ``None`` at end of body.

        May return an empty list (a read that ended mid-event)."""
        try:
            chunk = await self._live().read_some()
        except TimeoutError:
            raise timeout_failure("the upstream provider stalled mid-stream") from None
        except ConnectionBroken as exc:
            raise connection_failure(str(exc), "the connection to the upstream provider was lost mid-stream") from None
        if not chunk:
            return None
        return self._parser.feed(chunk)

    async def drain(self) -> None:
        """Read to the end after the provider's end marker, briefly, so the
        connection can be reused; give up quietly (the exit closes it)."""
        await self._live().drain(_DRAIN_S)

    def _live(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the stream is not open (use `async with client.open_stream(...)`)")
        return self._conn


def _describe(exc: BaseException) -> str:
    # Exception text only: socket and TLS errors name host and port, never headers.
    return f"{type(exc).__name__}: {exc}"
