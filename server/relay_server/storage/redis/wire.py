"""``RedisWire``: the per-request Redis connection — one multiplexed, pipelined
RESP2 connection per worker.

Why not redis-py here: every request makes three Redis calls (admit, plan-time
reads, settle), and redis-py spends ~50 µs of CPU on each (pool checkout, retry
wrapper, pure-Python command packing); over a single connection that is
pipelined the same call costs a few µs.  redis-py stays the client for
everything else (caches, stream buffers, health windows, blocking reads).

How it works: commands are written in order on one connection and replies come
back in the same order, so each call is a future at the tail of a FIFO.
Commands issued in the same event-loop tick leave in one ``write`` (a burst of
concurrent requests costs one syscall, not one each).  Replies are parsed by
``hiredis``.

Failure contract (the callers' fail-open / fail-closed rules depend on it):
errors are redis-py's exception types — ``ConnectionError`` when the connection
cannot be made or is lost, ``TimeoutError`` when a reply is late (the
connection is then dropped: a late reply would otherwise arrive for the wrong
caller, and a stalled Redis must not queue every request behind it), and
``ResponseError`` for error replies.  The next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay_server.detached import fresh_task, timer_at

Command = Sequence[bytes | str | int | float]


class Wire(Protocol):
    """What the hot path needs: ``RedisWire`` (one Redis) or ``ClusterWire`` (a cluster)."""

    async def execute(self, *command: Any) -> Any: ...

    async def batch(self, commands: Sequence[Command], *, defer_s: float = 0.0) -> list[Any]: ...

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Any], *, defer_s: float = 0.0) -> Any: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script called by its SHA1; loaded on the first NOSCRIPT reply."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 (Redis names scripts by SHA1)

    def call(self, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
            return cls(unix_path=parts.path, db=int(query.get("db", 0)), username=user, password=password)
        db_text = parts.path.lstrip("/")
        return cls(
            host=parts.hostname or "127.0.0.1", port=parts.port or 6379, tls=parts.scheme == "rediss",
            db=int(db_text) if db_text else 0, username=user, password=password,
        )  # fmt: skip


def _pack(commands: Sequence[Command]) -> bytes:
    # hiredis encodes in C (≈ 2 µs for an admission call, 5.5 in Python).
    # hiredis's stub declares the argument as a 1-tuple; any tuple of args is what it packs.
    return b"".join([hiredis.pack_command(c if isinstance(c, tuple) else tuple(c)) for c in commands])  # type: ignore[arg-type]


class _Protocol(asyncio.Protocol):
    """One connection: writes coalesced per loop tick, replies matched to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        # (deadline, last reply of a batch), oldest first.  Replies come in order, so only the
        # oldest unanswered batch can be late: one timer watches it (``_watch``) instead of a
        # timer armed and cancelled per call, which cost as much as the call itself.
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []
        # Calls that may wait for company (``send(..., defer_s=…)``): written with the next
        # write, or when the oldest of them has waited ``defer_s``.  Their waiters join the
        # FIFO when they are written, so replies still match in order.
        self._later: list[bytes] = []
        self._later_waiters: list[asyncio.Future[Any]] = []
        self._later_timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(
        self, payload: bytes, replies: int, *, watch: bool = True, defer_s: float = 0.0
    ) -> list[asyncio.Future[Any]]:
        if self.closed:
            raise RedisConnectionError("Redis connection closed")
        futures = [self._loop.create_future() for _ in range(replies)]
        if defer_s > 0.0:
            self._later.append(payload)
            self._later_waiters.extend(futures)
            if self._later_timer is None:
                self._later_timer = timer_at(self._loop, self._loop.time() + defer_s, self._flush_later)
            return futures
        self._waiters.extend(futures)
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(payload)
        if watch:
            deadline = self._loop.time() + self._timeout_s
            self._deadlines.append((deadline, futures[-1]))
            if self._watchdog is None:
                self._arm(deadline)
        return futures

    def _arm(self, when: float) -> None:
        # A timer keeps the context it was armed in until it fires: arm it in an empty one.
        self._watchdog = timer_at(self._loop, when, self._watch)

    def _watch(self) -> None:
        """The oldest unanswered batch's deadline came: late means the connection is dropped."""
        self._watchdog = None
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():  # answered, or its caller gave up
            deadlines.popleft()
        if not deadlines or self.closed:
            return
        deadline = deadlines[0][0]
        if deadline <= self._loop.time():
            self.abort(RedisTimeoutError(f"Redis did not answer within {self._timeout_s * 1000:.0f} ms"))
        else:
            self._arm(deadline)

    def _flush(self) -> None:
        if self._later:
            self._take_later()
        if self._out and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _take_later(self) -> None:
        """Deferred calls join the write being made, after the calls already queued for it."""
        self._out.extend(self._later)
        self._later.clear()
        self._waiters.extend(self._later_waiters)
        deadline = self._loop.time() + self._timeout_s
        self._deadlines.append((deadline, self._later_waiters[-1]))
        if self._watchdog is None:
            self._arm(deadline)
        self._later_waiters = []

    def _flush_later(self) -> None:
        self._later_timer = None
        if self._later and not self._out:  # otherwise the flush already scheduled takes them
            self._flush()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiters.popleft()
                if not waiter.done():  # a timed-out caller has gone; its reply is dropped
                    waiter.set_result(reply)
        except (InvalidResponse, IndexError) as exc:  # garbage or a reply nobody asked for
            self.abort(RedisConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis connection lost: {exc}" if exc else "Redis closed the connection"))

    def abort(self, exc: Exception) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        self._out.clear()
        self._later.clear()
        self._waiters.extend(self._later_waiters)  # never written: they fail with the rest
        self._later_waiters = []
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        self._deadlines.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # One exception object per waiter: raised in many tasks, a shared one would
                # pile every task's traceback onto itself.
                waiter.set_exception(type(exc)(*exc.args))


class RedisWire:
    """A lazily (re)connected pipelined connection.  Use inside one event loop."""

    def __init__(
        self, endpoint: Endpoint, *, timeout_s: float = 0.25, ssl_context: ssl.SSLContext | None = None,
        require_master: bool = False,
    ) -> None:  # fmt: skip
        self._endpoint = endpoint
        # Sentinel: a server the sentinels still name may have been demoted; ROLE on connect refuses it.
        self._require_master = require_master
        self._timeout_s = timeout_s
        self._ssl = ssl_context if ssl_context is not None else (ssl.create_default_context() if endpoint.tls else None)
        self._conn: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25) -> RedisWire:
        return cls(Endpoint.parse(url), timeout_s=timeout_s)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def connect(self) -> None:
        """Open the connection now (a caller that must know a command never left: Sentinel's re-resolve)."""
        if not self.connected:
            await self._connect()

    async def execute(self, *command: Any) -> Any:
        """One command's reply; an error reply raises ``ResponseError``."""
        return only_reply(await self.batch([command]))

    async def batch(self, commands: Sequence[Command], *, defer_s: float = 0.0) -> list[Any]:
        """Every reply in order, one round trip; error replies are returned as ``ResponseError``
        values (the caller decides), transport failures raise.  ``defer_s``: the commands may wait
        that long for another call's write to travel with (work off the answer's path)."""
        if not commands:
            return []
        conn = self._conn if self._conn is not None and not self._conn.closed else await self._connect()
        futures = conn.send(_pack(commands), len(commands), defer_s=defer_s)  # the watchdog times it out
        try:
            await futures[-1]  # replies arrive in order: the last one done means all are
        except BaseException:
            # Failed, timed out or the caller was cancelled: settle every future of the batch so
            # late replies are dropped and no exception is left unretrieved.
            for f in futures:
                if not f.done():
                    f.cancel()
                elif not f.cancelled():
                    f.exception()
            raise
        return [f.result() for f in futures]

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Any], *, defer_s: float = 0.0) -> Any:
        """EVALSHA, loading the script once if Redis does not know it (restart, flush)."""
        load = lambda: self.execute("SCRIPT", "LOAD", script.source)  # noqa: E731
        return await call_script(self, script, keys, args, load, defer_s=defer_s)

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.abort(RedisConnectionError("Redis connection closed by Relay"))
            self._conn = None

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise RedisConnectionError("Redis connection closed by Relay")
        if self._connecting is None:
            # Concurrent callers share one attempt; a failed attempt is not cached.  Dialled outside
            # the caller's request context, which the connection would otherwise keep alive.
            self._connecting = fresh_task(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._conn = attempt.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        ep = self._endpoint
        try:
            async with asyncio.timeout(self._timeout_s):
                if ep.unix_path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Protocol(loop, self._timeout_s), ep.unix_path)
                else:
                    server_hostname = ep.host if self._ssl is not None else None
                    _, conn = await loop.create_connection(
                        lambda: _Protocol(loop, self._timeout_s), ep.host, ep.port, ssl=self._ssl, server_hostname=server_hostname
                    )
                await self._handshake(conn)
        except TimeoutError:
            raise RedisTimeoutError(f"Redis connect timed out after {self._timeout_s * 1000:.0f} ms") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc.strerror or exc}") from None
        return conn

    async def _handshake(self, conn: _Protocol) -> None:
        ep = self._endpoint
        commands: list[Command] = []
        if ep.password is not None:
            commands.append(("AUTH", ep.username, ep.password) if ep.username else ("AUTH", ep.password))
        if ep.db:
            commands.append(("SELECT", ep.db))
        if self._require_master:
            commands.append(("ROLE",))
        if not commands:
            return
        # Inside ``_open``'s own timeout.
        futures = conn.send(_pack(commands), len(commands), watch=False)
        for reply in [await f for f in futures]:
            if isinstance(reply, ResponseError):
                conn.abort(RedisConnectionError(f"Redis refused the connection: {reply}"))
                raise RedisConnectionError(f"Redis refused the connection: {reply}")
        if self._require_master and not (reply and reply[0] == b"master"):
            conn.abort(RedisConnectionError("Redis at the master's address is not a master (failover under way)"))
            raise RedisConnectionError(f"Redis at {ep.host}:{ep.port} is not a master (failover under way)")


def only_reply(replies: list[Any]) -> Any:
    """The reply of a one-command batch; an error reply raises ``ResponseError``."""
    (reply,) = replies
    if isinstance(reply, ResponseError):
        raise reply
    return reply


async def call_script(
    wire: Wire, script: Script, keys: Sequence[str], args: Sequence[Any], load: Callable[[], Awaitable[Any]],
    *, defer_s: float = 0.0,
) -> Any:
    """EVALSHA; on NOSCRIPT (a restart, a flush, a promoted replica) ``load`` the script where the
    keys live, once, and call it again.  Every wire kind shares this; only where to load differs."""
    call = script.call(keys, args)
    try:
        return only_reply(await wire.batch([call], defer_s=defer_s))
    except ResponseError as exc:
        if not is_noscript(exc):
            raise
    await load()
    return only_reply(await wire.batch([call]))


def is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, NoScriptError) or (isinstance(exc, ResponseError) and str(exc).startswith("NOSCRIPT"))
