"""The one outbound HTTP client every HTTP provider shares.

One ``aiohttp.ClientSession`` (created at start-up by the composition root and
passed in) gives connection pooling and keep-alive across providers.  Transport
failures become ``ProviderFailure`` here, so translators only ever see HTTP
statuses and bodies.

Timeouts per call: ``connect_s`` (TCP + TLS), ``first_byte_s`` (until response
headers), ``idle_s`` (between two reads of a stream) and the call's own total
(``ProviderCall.timeout_s``), which aiohttp enforces across body reads too.

Nothing here logs headers or bodies: they carry credentials and prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import orjson

from relay_server.providers.sse import SSEEvent, SSEParser
from relay_server.providers.translator import (
    ProviderFailure,
    UpstreamRequest,
    connection_failure,
    timeout_failure,
)

log = logging.getLogger(__name__)

# After a stream's end marker the body should end at once; wait at most this long
# for the terminator so the connection can go back to the pool, else close it.
_DRAIN_S = 0.5


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
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @classmethod
    def create(cls, *, max_connections: int = 512, max_per_host: int = 0) -> HttpClient:
        """Build the shared session.  Call inside the running event loop."""
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=max_per_host,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            headers={"User-Agent": "relay-gateway"},
        )
        return cls(session)

    async def close(self) -> None:
        await self._session.close()

    async def send(self, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> UpstreamResponse:
        """A whole request/response exchange (non-streaming calls, error bodies)."""
        try:
            async with self._open(req, timeouts, total_s, stream=False) as resp:
                body = await resp.read()
                return UpstreamResponse(resp.status, resp.headers, body)
        except ProviderFailure:
            raise
        except TimeoutError:
            raise timeout_failure() from None
        except aiohttp.ClientError as exc:
            raise connection_failure(_describe(exc)) from None

    @contextlib.asynccontextmanager
    async def open_stream(
        self, req: UpstreamRequest, timeouts: Timeouts, total_s: float
    ) -> AsyncIterator[UpstreamStream]:
        """Open a streaming response.  Leaving the block early (error, client gone,
        task cancelled) closes the upstream connection at once, so the provider
        stops generating tokens nobody will read."""
        async with self._open(req, timeouts, total_s, stream=True) as resp:
            yield UpstreamStream(resp)

    @contextlib.asynccontextmanager
    async def _open(
        self, req: UpstreamRequest, timeouts: Timeouts, total_s: float, *, stream: bool
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        client_timeout = aiohttp.ClientTimeout(
            total=total_s,
            sock_connect=timeouts.connect_s,
            sock_read=timeouts.idle_s if stream else None,
        )
        data = orjson.dumps(req.json_body) if req.json_body is not None else None
        headers = dict(req.headers)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        try:
            # asyncio.timeout wraps only the await for the headers (no yield inside),
            # so it can never fire while the caller's own code is running.
            async with asyncio.timeout(timeouts.first_byte_s):
                resp = await self._session.request(
                    req.method, req.url, data=data, headers=headers, timeout=client_timeout
                )
        except TimeoutError:
            raise timeout_failure() from None
        except aiohttp.ClientError as exc:
            raise connection_failure(_describe(exc)) from None
        if log.isEnabledFor(logging.DEBUG):
            parts = urlsplit(req.url)
            log.debug("upstream %s %s%s -> %d", req.method, parts.netloc, parts.path, resp.status)
        try:
            yield resp
        finally:
            if resp.content.at_eof():
                resp.release()  # body fully read: the connection goes back to the pool
            else:
                resp.close()  # unread body (cancel, error, early stop): drop the connection now


class UpstreamStream:
    """Reads a streaming body as SSE events, as they arrive (no buffering)."""

    __slots__ = ("_resp", "_parser", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._parser = SSEParser()
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read_body(self) -> bytes:
        """The whole body (used for error responses, which are not streams)."""
        try:
            return await self._resp.read()
        except TimeoutError:
            raise timeout_failure() from None
        except aiohttp.ClientError as exc:
            raise connection_failure(_describe(exc)) from None

    async def next_events(self) -> list[SSEEvent] | None:
        """Events completed by the next network read; ``None`` at end of body.

        May return an empty list (a read that ended mid-event)."""
        try:
            chunk = await self._resp.content.readany()
        except TimeoutError:
            raise timeout_failure("the upstream provider stalled mid-stream") from None
        except aiohttp.ClientError as exc:
            # Includes ClientPayloadError: the connection was cut mid-body.
            raise connection_failure(_describe(exc), "the connection to the upstream provider was lost mid-stream") from None
        if not chunk:
            return None
        return self._parser.feed(chunk)

    async def drain(self) -> None:
        """Read to the end after the provider's end marker, briefly, so the
        connection can be reused; give up quietly (the exit closes it)."""
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(_DRAIN_S):
                while await self._resp.content.readany():
                    pass


def _describe(exc: BaseException) -> str:
    # Exception text only: aiohttp's messages name host and port, never headers.
    return f"{type(exc).__name__}: {exc}"
