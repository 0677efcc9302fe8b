"""Keep-alive connections per ``(scheme, host, port, proxy)``, under connection limits.

Idle connections are reused last-in first-out (the most recently used one is
the least likely to have been closed by the server) and closed after
``keepalive_s`` idle by one sweeper timer.  ``max_connections`` (all hosts) and
``max_per_host`` count idle and busy connections; 0 means unlimited.  A caller
beyond a limit waits for a slot; at the total limit an idle connection to
another host is closed to make room.  Waiting and dialling together are bounded
by the caller's ``limit_at`` (its connect timeout).

The fast path (``take_idle`` / ``release``) is synchronous and allocates nothing.

A tenant-chosen host (a BYOK base URL) is dialled *vetted*: the pool resolves
the name itself, keeps only the addresses ``relay_server.address_policy``
allows, and connects to one of those (TLS still verifies the name), so a
name re-pointed at an inner address after it was saved reaches nothing.  Such
requests reuse only vetted connections.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque

from relay_server.address_policy import RefusedDestination, allowed_addresses, refused_message
from relay_server.detached import detached, timer_at
from relay_server.providers import http_proxy
from relay_server.providers.http_connection import Connection, ConnectionBroken
from relay_server.providers.http_message import PoolKey


def default_ssl_context() -> ssl.SSLContext:
    """System trust store, hostname checks, TLS 1.2+ (Python's defaults)."""
    return ssl.create_default_context()


class Pool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_connections: int,
        max_per_host: int,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = 30.0,
        allow_private: bool = False,
    ) -> None:
        self._loop = loop
        self._allow_private = allow_private  # for vetted dials (settings.private_destinations_allowed)
        self._max_total = max_connections
        self._max_per_host = max_per_host
        self._ssl_context = ssl_context
        self._keepalive_s = keepalive_s
        self._idle: dict[PoolKey, list[Connection]] = {}
        """Per key, oldest first: reuse pops from the end, expiry trims the front."""
        self._per_host: dict[PoolKey, int] = {}
        self._total = 0
        """Slots held: open connections (idle or busy) plus dials in progress."""
        self._connections: set[Connection] = set()
        self._waiters: deque[tuple[PoolKey, asyncio.Future[None]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # -- fast path ---------------------------------------------------------------------

    def take_idle(self, key: PoolKey, now: float, vetted: bool = False) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < self._keepalive_s:
                if vetted and not conn.vetted:
                    idle.append(conn)  # stays for unvetted callers; this one dials its own
                    return None
                return conn
            self._drop(conn)
        return None

    def release(self, conn: Connection) -> None:
        """End an exchange: pool the connection if it can serve another, else close it."""
        if conn.finish() and conn.counted and not self._closed:
            conn.idle_since = self._loop.time()
            idle = self._idle.get(conn.key)
            if idle is None:
                self._idle[conn.key] = [conn]
            else:
                idle.append(conn)
            if self._sweeper is None:
                self._sweeper = timer_at(self._loop, conn.idle_since + self._keepalive_s, self._sweep)
        else:
            self._drop(conn)
        if self._waiters:
            self._wake_next()

    def discard(self, conn: Connection) -> None:
        """End a failed or abandoned exchange: the connection is closed."""
        conn.finish()
        conn.abort()
        self._drop(conn)
        if self._waiters:
            self._wake_next()

    # -- slow path: a new connection, maybe after waiting for a slot -----------------------

    async def connect(self, key: PoolKey, limit_at: float, vetted: bool = False) -> Connection:
        """An idle connection that appeared meanwhile, or a new one.  Raises
        ``TimeoutError`` at ``limit_at``, ``OSError`` (refused, DNS, TLS) or
        ``ConnectionBroken``."""
        async with asyncio.timeout_at(limit_at if limit_at != float("inf") else None):
            while True:
                if self._closed:
                    raise ConnectionBroken("the HTTP client is closed")
                conn = self.take_idle(key, self._loop.time(), vetted)
                if conn is not None:
                    return conn
                if self._make_room(key):
                    return await self._dial(key, vetted)
                await self._wait_for_slot(key)

    async def _dial(self, key: PoolKey, vetted: bool = False) -> Connection:
        scheme, host, port, proxy = key
        self._count(key, 1)
        try:
            # Through an egress proxy the proxy dials the name; the name is still checked here.
            address = await self._vetted_address(host, port) if vetted else host
            context = None
            if scheme == "https":
                context = self._tls_context()
            # Outside the current request's context: the connection outlives it (``relay_server.detached``).
            _, conn = await detached(
                lambda: self._loop.create_connection(
                    lambda: Connection(self._loop, key, self._forget),
                    address,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
                if proxy is None
                else http_proxy.dial(self._loop, lambda: Connection(self._loop, key, self._forget), proxy, host, port, context),
                discard=lambda made: made[0].close(),
            )
        except BaseException:
            self._count(key, -1)
            if self._waiters:
                self._wake_next()
            raise
        conn.counted = True
        conn.vetted = vetted
        self._connections.add(conn)
        if self._closed:
            self._drop(conn)
            raise ConnectionBroken("the HTTP client is closed")
        if context is not None:
            ssl_object = conn.transport.get_extra_info("ssl_object") if conn.transport else None
            protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if protocol not in (None, "http/1.1"):
                self._drop(conn)
                raise ConnectionBroken(f"the server chose ALPN protocol {protocol!r}")
        return conn

    async def _vetted_address(self, host: str, port: int) -> str:
        """An address of ``host`` the policy allows; ``RefusedDestination`` (an OSError) if none."""
        infos = await self._loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        allowed, refused = allowed_addresses([str(info[4][0]) for info in infos], allow_private=self._allow_private)
        if not allowed:
            raise RefusedDestination(refused_message(host, refused) if refused else f"destination {host} has no address")
        return allowed[0]

    def _tls_context(self) -> ssl.SSLContext:
        # Built on first use: loading the system trust store costs milliseconds,
        # and plain-http deployments (local models, tests) never need it.
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context

    async def _wait_for_slot(self, key: PoolKey) -> None:
        waiter = self._loop.create_future()
        entry = (key, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_next()  # we were handed a slot we will not use: pass it on
            else:
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
            raise

    def _wake_next(self) -> None:
        """Wake the first waiter that can proceed now (FIFO, but a waiter held
        by its per-host limit does not block waiters for other hosts)."""
        for entry in self._waiters:
            key, waiter = entry
            if not waiter.done() and self._can_proceed(key):
                self._waiters.remove(entry)
                waiter.set_result(None)
                return

    def _can_proceed(self, key: PoolKey) -> bool:
        if self._idle.get(key):
            return True
        if self._max_per_host and self._per_host.get(key, 0) >= self._max_per_host:
            return False
        return not self._max_total or self._total < self._max_total or any(self._idle.values())

    def _make_room(self, key: PoolKey) -> bool:
        if self._max_per_host and self._per_host.get(key, 0) >= self._max_per_host:
            return False
        if not self._max_total or self._total < self._max_total:
            return True
        # At the total limit: close the longest-idle connection of another host.
        oldest: Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        self._idle[oldest.key].pop(0)
        self._drop(oldest)
        return True

    def _count(self, key: PoolKey, delta: int) -> None:
        self._per_host[key] = self._per_host.get(key, 0) + delta
        self._total += delta

    # -- dropping and expiry -----------------------------------------------------------------

    def _drop(self, conn: Connection) -> None:
        """Close a connection that is in no idle list and give back its slot."""
        conn.abort()
        if conn.counted:
            conn.counted = False
            self._connections.discard(conn)
            self._count(conn.key, -1)

    def _forget(self, conn: Connection) -> None:
        """The peer closed an idle connection (``connection_lost`` outside an exchange)."""
        if not conn.counted:
            return
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._drop(conn)
        if self._waiters:
            self._wake_next()

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._loop.time()
        next_expiry = float("inf")
        for idle in self._idle.values():
            expired = 0
            while expired < len(idle) and now - idle[expired].idle_since >= self._keepalive_s:
                expired += 1
            for conn in idle[:expired]:
                self._drop(conn)
            del idle[:expired]
            if idle:
                next_expiry = min(next_expiry, idle[0].idle_since + self._keepalive_s)
        if next_expiry != float("inf"):
            self._sweeper = timer_at(self._loop, next_expiry, self._sweep)
        if self._waiters:
            self._wake_next()

    async def close(self) -> None:
        """Close every idle and in-flight connection; waiters fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._connections):
            self._drop(conn)
        self._idle.clear()
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionBroken("the HTTP client is closed"))
        await asyncio.sleep(0)  # let the transports run their connection_lost
