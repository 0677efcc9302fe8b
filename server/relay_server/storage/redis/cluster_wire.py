"""``ClusterWire``: the hot-path Redis client (``RedisWire``'s contract) over a Redis Cluster.

One pipelined ``RedisWire`` connection per master, and a slot map read with
``CLUSTER SLOTS``.  A batch is split by the hash slot of each command's first
key, each node's share leaves in one write, and the replies are put back in
the caller's order.  Every key of one command shares a hash tag (a tenant's
``relay:{tenant}:…`` or a provider's ``rl:out:{provider}:…``), so the first
key names the slot of them all.

Redirects: ``MOVED`` (the slot lives elsewhere now: failover, resharding)
updates the map for that slot, re-sends the command there and refreshes the
whole map in the background; ``ASK`` (a slot being migrated) re-sends once to
the named node after ``ASKING``.  A lost node connection raises
``ConnectionError`` as ``RedisWire`` does (callers fail open or closed at
once) and marks the map stale, so the next call re-reads ``CLUSTER SLOTS``
and finds the promoted replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from relay_server.detached import fresh_task
from relay_server.storage.redis.sentinel_wire import SentinelWire
from relay_server.storage.redis.urls import is_cluster_url, is_sentinel_url, parse_cluster_url
from relay_server.storage.redis.wire import Command, Endpoint, RedisWire, Script, call_script, only_reply

SLOTS = 16384
_MAX_REDIRECTS = 3
_REFRESH_GAP_S = 0.1  # a burst of failures re-reads the map once, not once per request
Addr = tuple[str, int]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def command_key(command: Command) -> bytes | None:
    """The key that routes ``command``: EVAL/EVALSHA's first key, else the first argument."""
    name = _text(command[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return _bytes(command[3]) if int(command[2]) > 0 else None
    if name in ("PING", "SCRIPT", "CLUSTER", "INFO", "ASKING") or len(command) < 2:
        return None
    return _bytes(command[1])


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def redirect(reply: Any) -> tuple[str, int, Addr] | None:
    """``("MOVED"|"ASK", slot, (host, port))`` for a redirect error reply, else None."""
    if not isinstance(reply, ResponseError):
        return None
    parts = str(reply).split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    return parts[0], int(parts[1]), (host, int(port))


class ClusterWire:
    """``RedisWire``'s ``execute`` / ``batch`` / ``script`` / ``close`` over a cluster."""

    def __init__(self, seeds: Sequence[Endpoint], *, timeout_s: float = 0.25) -> None:
        if not seeds:
            raise ValueError("a cluster needs at least one seed node")
        self._template = seeds[0]  # credentials and TLS shared by every node
        self._seeds = [(s.host, s.port) for s in seeds]
        self._timeout_s = timeout_s
        self._slots: list[Addr | None] = [None] * SLOTS
        self._nodes: dict[Addr, RedisWire] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._stale = True
        self._last_refresh = 0.0
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25) -> ClusterWire:
        target = parse_cluster_url(url)
        seeds = [
            Endpoint(host=h, port=p, tls=target.tls, username=target.username, password=target.password)
            for h, p in target.seeds
        ]
        return cls(seeds, timeout_s=timeout_s)

    # --- the RedisWire contract ---------------------------------------------------------

    async def execute(self, *command: Any) -> Any:
        return only_reply(await self.batch([command]))

    async def batch(self, commands: Sequence[Command], *, defer_s: float = 0.0) -> list[Any]:
        # ``defer_s`` is a permission, not a promise: calls here leave at once.
        if not commands:
            return []
        if self._stale:
            await self._refresh()
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        asking: dict[int, Addr] = {}
        for _ in range(_MAX_REDIRECTS + 1):
            await self._send(commands, pending, asking, replies)
            redirects = {i: r for i in pending if (r := redirect(replies[i])) is not None}
            if not redirects:
                return replies
            asking = {}
            for i, (kind, slot, addr) in redirects.items():
                if kind == "MOVED":
                    self._slots[slot] = addr
                    self._stale = True  # one slot moved: others of that node probably did too
                else:
                    asking[i] = addr
            pending = list(redirects)
        return replies  # still redirected after several hops: the caller sees the error reply

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Any], *, defer_s: float = 0.0) -> Any:
        """EVALSHA, loading the script on the key's node if it does not know it (new master, flush)."""
        addr = self._addr_for(_bytes(keys[0]) if keys else None)
        return await call_script(
            self, script, keys, args, lambda: self._node(addr).execute("SCRIPT", "LOAD", script.source)
        )

    async def close(self) -> None:
        self._closed = True
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()

    # --- routing ---------------------------------------------------------------------------

    async def _send(
        self, commands: Sequence[Command], indices: list[int], asking: dict[int, Addr], replies: list[Any]
    ) -> None:
        # One group per (node, asked): an ASK-redirected command needs ASKING before it, others not.
        groups: dict[tuple[Addr, bool], list[int]] = {}
        for i in indices:
            target = (asking[i], True) if i in asking else (self._addr_for(command_key(commands[i])), False)
            groups.setdefault(target, []).append(i)
        results = await asyncio.gather(
            *(self._send_node(addr, [commands[i] for i in idx], asking=asked) for (addr, asked), idx in groups.items()),
            return_exceptions=True,
        )
        for (_, idx), result in zip(groups.items(), results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, RedisConnectionError | OSError):
                    self._stale = True  # the node may be gone: re-read the map on the next call
                raise result
            for i, reply in zip(idx, result, strict=True):
                replies[i] = reply

    async def _send_node(self, addr: Addr, commands: list[Command], *, asking: bool) -> list[Any]:
        node = self._node(addr)
        if not asking:
            return await node.batch(commands)
        # ASK: each command goes right after its own ASKING (the flag lasts one command).
        flat: list[Command] = []
        for command in commands:
            flat += [("ASKING",), command]
        return (await node.batch(flat))[1::2]

    def _addr_for(self, key: bytes | None) -> Addr:
        if key is not None:
            addr = self._slots[key_slot(key)]
            if addr is not None:
                return addr
        # A keyless command, or a slot no node claims (the map is partial): any node will
        # do, and a wrong one answers MOVED.
        return next((a for a in self._slots if a is not None), self._seeds[0])

    def _node(self, addr: Addr) -> RedisWire:
        node = self._nodes.get(addr)
        if node is None:
            if self._closed:
                raise RedisConnectionError("Redis connection closed by Relay")
            endpoint = replace(self._template, host=addr[0], port=addr[1], db=0)
            node = self._nodes[addr] = RedisWire(endpoint, timeout_s=self._timeout_s)
        return node

    # --- the slot map ------------------------------------------------------------------------

    async def _refresh(self) -> None:
        if self._refreshing is None:
            if time.monotonic() - self._last_refresh < _REFRESH_GAP_S and any(self._slots):
                return
            self._refreshing = fresh_task(self._read_slots())
            self._refreshing.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)

    def _refreshed(self, attempt: asyncio.Future[None]) -> None:
        self._refreshing = None
        self._last_refresh = time.monotonic()
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the awaiting callers got it

    async def _read_slots(self) -> None:
        """Ask the known masters, then the seeds, for ``CLUSTER SLOTS``; the first answer wins."""
        candidates = list(dict.fromkeys([*(a for a in self._slots if a is not None), *self._seeds]))
        error: Exception | None = None
        for addr in candidates:
            try:
                reply = await self._node(addr).execute("CLUSTER", "SLOTS")
            except RedisError as exc:
                error = exc
                continue
            slots: list[Addr | None] = [None] * SLOTS
            for entry in reply:
                master = entry[2]
                addr_of = (_text(master[0]) or addr[0], int(master[1]))
                for slot in range(int(entry[0]), int(entry[1]) + 1):
                    slots[slot] = addr_of
            self._slots = slots
            self._stale = False
            self._drop_unused()
            return
        raise RedisConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS: {error}")

    def _drop_unused(self) -> None:
        """Close connections to nodes that serve no slot any more (a demoted or dead master)."""
        live = set(self._slots)
        for addr in [a for a in self._nodes if a not in live and a not in self._seeds]:
            node = self._nodes.pop(addr)
            with contextlib.suppress(Exception):
                fresh_task(node.close())


def create_wire(url: str, *, timeout_s: float = 0.25) -> RedisWire | ClusterWire | SentinelWire:
    """The hot-path client the URL asks for (see ``storage/redis/client.py``)."""
    if is_sentinel_url(url):
        return SentinelWire.from_url(url, timeout_s=timeout_s)
    if is_cluster_url(url):
        return ClusterWire.from_url(url, timeout_s=timeout_s)
    return RedisWire.from_url(url, timeout_s=timeout_s)
