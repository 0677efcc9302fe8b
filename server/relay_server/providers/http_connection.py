"""One keep-alive HTTP/1.1 connection: an ``asyncio.Protocol`` fed to httptools.

A connection runs one exchange at a time (no pipelining).  The response is
parsed as bytes arrive; the body goes into a list of chunks the reader takes.
Cheap on purpose, this is Relay's hot path: one future per wait and at most
one timer handle, armed lazily.  The timer may fire early (at a deadline that
has since moved, or one left from the previous exchange): it then re-arms
itself at the deadline now due.  So reads never touch it, and back-to-back
exchanges on a connection usually reuse the one still pending.

Deadlines of an exchange: ``deadline`` (the call's total), ``first_byte_at``
(until the response headers) and ``idle_s`` (longest silence between two reads,
counted from the request write; not counted while we paused reading).  A
timeout or failure aborts the transport at once, so the provider stops working
on a request nobody waits for.

Failures are raised as ``ConnectionBroken`` (text for logs: no headers, no
body) or ``TimeoutError``; the client maps them to ``ProviderFailure``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httptools

from relay_server.detached import timer_at
from relay_server.providers.http_message import PoolKey

HIGH_WATER = 256 * 1024
"""Unread streamed bytes above which we stop reading the socket (back-pressure)."""
INFINITY = float("inf")
STALE_WINDOW_S = 1.0
"""How soon after the request a stale keep-alive close shows (a round trip, with margin)."""
# asyncio may run a timer up to its clock resolution early.
_TIMER_SLACK_S = 0.001


class ConnectionBroken(Exception):
    """The connection failed or the response was malformed.  The text names no
    header and no body: it goes to logs as the failure's detail."""


class _TrailingData(Exception):
    """Bytes after a complete response: never reuse the connection."""


class Connection(asyncio.Protocol):
    __slots__ = (
        "key", "transport", "exchanges", "idle_since", "counted", "vetted", "got_byte", "status", "raw_headers",
        "_loop", "_on_idle_lost", "_parser", "_closed", "_active", "_stream", "_headers_done", "_interim",
        "_complete", "_keep_alive", "_chunks", "_buffered", "_paused", "_error", "_waiter", "_timer",
        "_deadline", "_first_byte_at", "_idle_s", "_last_read",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, key: PoolKey, on_idle_lost: Callable[[Connection], None]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.exchanges = 0
        self.idle_since = 0.0
        self.counted = False
        """Pool bookkeeping: whether this connection holds one of the pool's slots."""
        self.vetted = False
        """Dialled to an address ``relay_server.address_policy`` allows (tenant-chosen hosts need one)."""
        self._loop = loop
        self._on_idle_lost = on_idle_lost
        self._parser = httptools.HttpResponseParser(self)
        self._closed = self._active = self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._reset(INFINITY, INFINITY, None, stream=False)

    def _reset(self, deadline: float, first_byte_at: float, idle_s: float | None, *, stream: bool) -> None:
        """The per-exchange state."""
        self.got_byte = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._stream = stream
        self._headers_done = self._interim = self._complete = self._keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._error: BaseException | None = None
        self._deadline = deadline
        self._first_byte_at = first_byte_at
        self._idle_s = idle_s

    # -- for the pool and the client -----------------------------------------------

    def usable(self) -> bool:
        """Still fit for a new exchange (the peer has not closed it)."""
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def stale_failure(self, elapsed_s: float) -> bool:
        """A reused connection that failed before any byte of the response,
        within ``STALE_WINDOW_S`` of sending the request.

        That is what a keep-alive connection the server closed while it sat idle
        looks like: its FIN crossed our request, and the close reaches us within
        a round trip.  A server only closes a connection it is not answering
        on, so the request was never processed: resending it on a fresh
        connection cannot run it twice.  A later failure without a byte (a load
        balancer's idle timer cutting a long generation) may follow processing,
        so it is not retried; nor is anything else (a byte arrived, a timeout,
        a connection's first exchange)."""
        return self.exchanges > 1 and not self.got_byte and elapsed_s < STALE_WINDOW_S

    def start(self, payload: bytes, deadline: float, first_byte_at: float, idle_s: float | None, *, stream: bool) -> None:
        """Begin an exchange: reset the per-response state, arm the timer, write."""
        self.exchanges += 1
        self._active = True
        self._reset(deadline, first_byte_at, idle_s, stream=stream)
        if idle_s is not None:
            self._last_read = self._loop.time()
        self._arm()
        transport = self.transport
        if transport is None or self._closed or transport.is_closing():
            self._fail(ConnectionBroken("the connection closed before the request was sent"))
            return
        transport.write(payload)

    def finish(self) -> bool:
        """End the exchange.  True if the connection may serve another one: the
        response was read to its end, both sides allow keep-alive, the peer has
        not closed.  Otherwise the connection is aborted here."""
        self._active = False
        reusable = self._complete and self._keep_alive and self.usable()
        if reusable:  # the timer stays: the next exchange may reuse it
            if self._paused:
                self._paused = False
                cast(asyncio.Transport, self.transport).resume_reading()  # notice the peer's close while idle
        else:
            self.abort()
        self._chunks = []
        return reusable

    def abort(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()

    async def wait_headers(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_whole(self) -> bytes:
        """The whole body (non-streamed exchanges: never paused)."""
        while not self._complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        self._chunks = []
        return b"".join(chunks)

    async def read_some(self) -> bytes:
        """What has arrived since the last read (waiting for at least one byte);
        ``b""`` at the end of the body.  Data received before a failure is
        returned first, the failure is raised on the next call."""
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        self._chunks = []
        self._buffered = 0
        if self._paused:
            self._resume()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def drain(self, limit_s: float) -> None:
        """Read to the end within ``limit_s`` so the connection can be reused;
        give up quietly (the connection is then closed, not pooled)."""
        limit = self._loop.time() + limit_s
        if limit < self._deadline:
            self._deadline = limit
            self._rearm()
        try:
            while await self.read_some():
                pass
        except (TimeoutError, ConnectionBroken):
            pass

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._active:
            # An idle connection must be silent: these bytes are garbage or the
            # rest of a response we gave up on.  Never reuse it.
            self.abort()
            return
        self.got_byte = True
        if self._idle_s is not None:
            self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._complete:
                self._keep_alive = False  # the response stands; the extra bytes spoil the connection
            else:
                self._fail(ConnectionBroken(f"malformed response: {type(exc).__name__}: {exc}"))

    def eof_received(self) -> bool:
        self._closed = True
        if self._active and not self._complete:
            self._ended_early("the server closed the connection")
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._active:
            if not self._complete:
                detail = f"{type(exc).__name__}: {exc}" if exc is not None else "the connection was closed"
                self._ended_early(detail)
        else:
            self._on_idle_lost(self)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _TrailingData
        self.raw_headers = []  # again after a 1xx interim response

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the real response follows
            return
        self.status = status
        self._headers_done = True
        if self._stream:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        if self._stream:
            self._buffered += len(body)
            if self._buffered > HIGH_WATER and not self._paused:
                self._paused = True
                cast(asyncio.Transport, self.transport).pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- internals -----------------------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._keep_alive = False
        self.abort()
        self._wake()

    def _ended_early(self, detail: str) -> None:
        """The peer closed before ``on_message_complete``: the end of a body
        delimited by the close, or a cut response."""
        if self._headers_done and self._error is None and self._delimited_by_close():
            self._complete = True
            self._keep_alive = False
            self._wake()
        else:
            self._fail(ConnectionBroken(detail))

    def _delimited_by_close(self) -> bool:
        # Rare path (only at a close mid-response), so the headers are scanned here
        # rather than on every response.  llhttp finishes 204/304 bodies itself.
        for name, value in self.raw_headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
        if self._idle_s is not None:
            self._last_read = self._loop.time()  # the silence while paused was ours
            self._rearm()

    def _due(self) -> float:
        due = self._deadline
        if not self._headers_done and self._first_byte_at < due:
            due = self._first_byte_at
        if self._idle_s is not None and not self._paused:
            idle_due = self._last_read + self._idle_s
            if idle_due < due:
                due = idle_due
        return due

    def _rearm(self) -> None:
        """A deadline moved earlier (drain, resumed reading)."""
        if self._active and not self._complete and self._error is None:
            self._arm()

    def _arm(self) -> None:
        due = self._due()
        if due == INFINITY:  # (uvloop cannot schedule at infinity)
            return
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return  # fires first, then re-arms for what is due by then
            timer.cancel()
        self._timer = timer_at(self._loop, due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._active or self._complete or self._error is not None:
            return
        if self._loop.time() + _TIMER_SLACK_S >= self._due():
            self._fail(TimeoutError())
        else:
            self._arm()
