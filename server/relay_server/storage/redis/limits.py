"""Redis side of admission: rate-limit windows and spend reservations, one
script call per request on the way in (``admit.lua``) and one on the way out
(``settle.lua``).

Every key of one call carries the tenant's hash tag (``relay:{tenant}:…``),
so both scripts work unchanged on Redis Cluster.  Key layout:

* ``relay:{t}:rl:rpm`` / ``rl:tpm``: sliding minute (hash epoch-second → count)
* ``relay:{t}:rl:rpd:YYYYMMDD``: requests of one UTC day (string counter)
* ``relay:{t}:rl:key:{key_id}:…``: the same per key
* ``relay:{t}:noisy``: limit factor in permille while the tenant is flagged
* spend caps: see ``storage/redis/spend.py``
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Literal, TypeVar

from redis.exceptions import MaxConnectionsError

from relay_server.storage.redis.client import tenant_key
from relay_server.storage.redis.wire import Script, Wire

WindowKind = Literal["m", "d"]
T = TypeVar("T")

# The shared client's pool refuses (rather than queues) calls beyond its size:
# a burst of admissions waits for a free connection, up to ~250 ms in total.
_POOL_WAITS_S = (0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.05, 0.05)

# A settlement runs after the answer has gone, its reservation still bounding spend: it may wait
# this long for another call's write (usually the next admission) and share its round trip —
# one write and one reply read fewer for the worker and for Redis (bench/README.md, round 11).
SETTLE_COMPANY_S = 0.002


def load_script(name: str) -> str:
    return resources.files("relay_server.storage.redis").joinpath("scripts", name).read_text(encoding="utf-8")


def window_key(tenant_id: str, resource: str, *, key_id: str | None = None, day: datetime | None = None) -> str:
    """The counter of one limit; per-day counters carry their UTC day."""
    scope = ("key", key_id) if key_id else ()
    name = "rpd" if resource == "requests_per_day" else resource
    suffix = (name, day.strftime("%Y%m%d")) if day is not None else (name,)
    return tenant_key(tenant_id, "rl", *scope, *suffix)


def noisy_key(tenant_id: str) -> str:
    return tenant_key(tenant_id, "noisy")


@dataclass(frozen=True, slots=True)
class WindowArg:
    key: str
    kind: WindowKind
    limit: int
    cost: int
    scalable: bool
    reset_in_ms: int = 0  # per-day windows: until the next UTC midnight


@dataclass(frozen=True, slots=True)
class CapArg:
    hash_key: str
    zset_key: str
    cap_micros: int
    amount: int
    lease_until_ms: int
    ttl_ms: int  # 0: the key never expires (lifetime caps)


@dataclass(frozen=True, slots=True)
class AdmitReply:
    status: int  # 0 admitted, 1 limited, 2 cap exhausted, 3 caps need seeding
    values: tuple[int, ...]

    ADMITTED = 0
    LIMITED = 1
    CAP_EXHAUSTED = 2
    NEED_SEED = 3


@dataclass(frozen=True, slots=True)
class SettleCap:
    hash_key: str
    zset_key: str
    actual_micros: int
    warn_at_micros: int


class RedisAdmission:
    """Runs the two scripts over the per-request connection (``RedisWire``);
    raises ``redis.exceptions.RedisError`` (incl. timeouts) to the caller."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._admit = Script.of(load_script("admit.lua"))
        self._settle = Script.of(load_script("settle.lua"))

    async def admit(
        self, *, noisy: str, request_id: str, now_ms: int, windows: list[WindowArg], caps: list[CapArg]
    ) -> AdmitReply:
        keys: list[str] = [w.key for w in windows]
        args: list[Any] = [now_ms, request_id, len(windows)]
        for w in windows:
            args += [w.kind, w.limit, w.cost, "1" if w.scalable else "0", w.reset_in_ms]
        args.append(len(caps))
        for c in caps:
            keys += [c.hash_key, c.zset_key]
            args += [c.cap_micros, c.amount, c.lease_until_ms, c.ttl_ms]
        keys.append(noisy)
        reply = await self._wire.script(self._admit, keys, args)
        values = tuple(int(v) for v in reply)
        return AdmitReply(values[0], values[1:])

    async def settle(
        self,
        *,
        request_id: str,
        admit_s: int,
        now_ms: int,
        token_windows: list[tuple[str, int]],
        caps: list[SettleCap],
    ) -> list[tuple[int, bool]]:
        """Returns per cap (spent after settling or -1 if its key was gone, warning crossed)."""
        if not token_windows and not caps:
            return []
        keys = [key for key, _ in token_windows]
        args: list[Any] = [admit_s, now_ms, len(token_windows), *(delta for _, delta in token_windows)]
        args += [request_id, len(caps)]
        for c in caps:
            keys += [c.hash_key, c.zset_key]
            args += [c.actual_micros, c.warn_at_micros]
        reply = [int(v) for v in await self._wire.script(self._settle, keys, args, defer_s=SETTLE_COMPANY_S)]
        return [(reply[i], reply[i + 1] == 1) for i in range(0, len(reply), 2)]


async def pooled(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call, waiting briefly for a connection when the pool is momentarily exhausted."""
    for wait in _POOL_WAITS_S:
        try:
            return await call()
        except MaxConnectionsError:
            await asyncio.sleep(wait)
    return await call()
