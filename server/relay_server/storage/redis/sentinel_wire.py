"""``SentinelWire``: the hot-path Redis client (``RedisWire``'s contract) for a master that Redis
Sentinel watches (``redis+sentinel://`` URLs, ``urls.py``).

The sentinels are asked ``SENTINEL get-master-addr-by-name <name>`` one after the other; the
first that names a master moves to the front of the list (the Sentinel client guidelines),
so a dead sentinel costs one refused connection, once.  Commands then go over one pipelined
``RedisWire`` to that address, which checks ``ROLE`` when it connects: a server the sentinels
still name but that was already demoted is refused, never written to.

The master is asked for again whenever the connection has to be (re)made, at most every
``RECHECK_S`` in the background while all is well (after ``SENTINEL FAILOVER`` the old master
keeps answering as a master until Sentinel demotes it, up to ~10 s later: a new address moves
the wire at once), and after a reply that says the server is not the master any more:

* A failure to connect (the master is dead, or is now a replica) happens before any command
  left, so the sentinels are asked again and the connection is tried once more; if that
  fails too, ``ConnectionError`` goes to the caller at once.
* A connection lost or a reply late once commands were sent raises ``ConnectionError`` /
  ``TimeoutError`` as ``RedisWire`` does: the commands may have run, so they are never sent
  twice (a spend settle is not billed twice); the caller's fail-open (limits) or
  fail-closed (spend caps) rule applies, and the next call asks the sentinels.
* ``READONLY`` (a demoted master still accepting commands) and ``LOADING`` (the named server
  is still loading its data) mean that command did not run: when the sentinels now name
  another server, those commands are sent there once; otherwise the caller gets the error.

Every step is bounded by ``timeout_s`` (per sentinel asked, per connect, per reply), so a
request during a switch-over fails or succeeds within a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay_server.detached import fresh_task
from relay_server.storage.redis.urls import RECHECK_S, Addr, SentinelUrl, parse_sentinel_url
from relay_server.storage.redis.wire import Command, Endpoint, RedisWire, Script, call_script, only_reply

_NOT_MASTER = ("READONLY", "LOADING")


def not_master(reply: Any) -> bool:
    """An error reply that means the command did not run because the server is not (yet) the master."""
    return isinstance(reply, ResponseError) and str(reply).startswith(_NOT_MASTER)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelWire:
    """``RedisWire``'s ``execute`` / ``batch`` / ``script`` / ``close``, on whichever server the sentinels name."""

    def __init__(self, target: SentinelUrl, *, timeout_s: float = 0.25) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._sentinels: list[Addr] = list(target.sentinels)
        self._asking: dict[Addr, RedisWire] = {}
        self._master: RedisWire | None = None
        self._master_addr: Addr | None = None
        self._stale = True
        self._resolving: asyncio.Future[None] | None = None
        self._recheck_at = 0.0
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25) -> SentinelWire:
        return cls(parse_sentinel_url(url), timeout_s=timeout_s)

    @property
    def master_addr(self) -> Addr | None:
        """The address commands go to now (None before the first call)."""
        return self._master_addr

    # --- the RedisWire contract ---------------------------------------------------------

    async def execute(self, *command: Any) -> Any:
        return only_reply(await self.batch([command]))

    async def batch(self, commands: Sequence[Command], *, defer_s: float = 0.0) -> list[Any]:
        # ``defer_s`` is a permission, not a promise: calls here leave at once.
        if not commands:
            return []
        self._recheck()
        wire = await self._connected_master()
        replies = await self._send(wire, commands)
        again = [i for i, reply in enumerate(replies) if not_master(reply)]
        if not again:
            return replies
        self._stale = True
        fresh = await self._connected_master()
        if fresh is wire:
            return replies  # the sentinels still name that server: the caller sees its answer
        for i, reply in zip(again, await self._send(fresh, [commands[i] for i in again]), strict=True):
            replies[i] = reply
        return replies

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Any], *, defer_s: float = 0.0) -> Any:
        """EVALSHA, loading the script once if the master does not know it (a promoted replica, a flush)."""
        return await call_script(self, script, keys, args, lambda: self.execute("SCRIPT", "LOAD", script.source))

    async def close(self) -> None:
        self._closed = True
        wires = [w for w in (self._master, *self._asking.values()) if w is not None]
        self._master, self._asking = None, {}
        for wire in wires:
            await wire.close()

    # --- the master ------------------------------------------------------------------------

    async def _send(self, wire: RedisWire, commands: Sequence[Command]) -> list[Any]:
        try:
            return await wire.batch(commands)
        except (RedisConnectionError, RedisTimeoutError):
            self._stale = True  # the commands may have run: not re-sent, but the next call asks again
            raise

    async def _connected_master(self) -> RedisWire:
        """The master's wire, connected; a failed connect (nothing sent yet) asks the sentinels once more."""
        for attempt in range(2):
            if self._closed:
                raise RedisConnectionError("Redis connection closed by Relay")
            if self._stale or self._master is None or not self._master.connected:
                await self._resolve()
            wire = self._master
            assert wire is not None  # _resolve set it or raised
            try:
                await wire.connect()
                return wire
            except (RedisConnectionError, RedisTimeoutError):
                self._stale = True
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _recheck(self) -> None:
        """At most every ``RECHECK_S``, ask the sentinels in the background (the caller does not wait):
        after ``SENTINEL FAILOVER`` the old master answers as a master until Sentinel demotes it."""
        if self._resolving is None and time.monotonic() >= self._recheck_at:
            self._recheck_at = time.monotonic() + RECHECK_S
            self._resolving = fresh_task(self._ask_sentinels())
            self._resolving.add_done_callback(self._resolved)

    async def _resolve(self) -> None:
        # Concurrent callers share one round of questions, run outside any caller's context.
        if self._resolving is None:
            self._resolving = fresh_task(self._ask_sentinels())
            self._resolving.add_done_callback(self._resolved)
        await asyncio.shield(self._resolving)

    def _resolved(self, attempt: asyncio.Future[None]) -> None:
        self._resolving = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the awaiting callers got it

    async def _ask_sentinels(self) -> None:
        name = self._target.master
        problems: list[str] = []
        for addr in list(self._sentinels):
            try:
                reply = await self._sentinel(addr).execute("SENTINEL", "get-master-addr-by-name", name)
            except RedisError as exc:
                problems.append(f"{addr[0]}:{addr[1]}: {exc}")
                continue
            if not reply:
                problems.append(f"{addr[0]}:{addr[1]}: does not know a master named {name!r}")
                continue
            self._sentinels.remove(addr)
            self._sentinels.insert(0, addr)
            self._use((_text(reply[0]), int(reply[1])))
            self._stale = False
            self._recheck_at = time.monotonic() + RECHECK_S
            return
        raise RedisConnectionError(f"no Redis Sentinel named the master {name!r}: " + "; ".join(problems))

    def _use(self, addr: Addr) -> None:
        if self._closed:  # closed while the sentinels were asked: open nothing new
            raise RedisConnectionError("Redis connection closed by Relay")
        if addr == self._master_addr and self._master is not None:
            return
        old, t = self._master, self._target
        endpoint = Endpoint(host=addr[0], port=addr[1], tls=t.tls, db=t.db, username=t.username, password=t.password)
        self._master = RedisWire(endpoint, timeout_s=self._timeout_s, require_master=True)
        self._master_addr = addr
        if old is not None:  # the demoted or dead master: its callers in flight fail as on a lost connection
            with contextlib.suppress(Exception):
                fresh_task(old.close())

    def _sentinel(self, addr: Addr) -> RedisWire:
        wire = self._asking.get(addr)
        if wire is None:
            if self._closed:
                raise RedisConnectionError("Redis connection closed by Relay")
            wire = self._asking[addr] = RedisWire(
                Endpoint(host=addr[0], port=addr[1], tls=self._target.tls), timeout_s=self._timeout_s
            )
        return wire
