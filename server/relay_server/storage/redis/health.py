"""Provider health in Redis: circuit breakers and a 5-minute attempt window.

* ``relay:circuit:{provider}`` — the breaker (``scripts/circuit.lua``), shared
  by every worker so one worker's failures protect all of them;
* ``relay:health:{provider}:{bucket}`` — attempts in 10-second buckets:
  count, errors and a latency histogram, from which the monitor derives the
  5-minute error rate and p95 latency (no per-request lists to trim).

Redis errors propagate; ``pipeline/routing/health.py`` falls back to in-process state.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis

BUCKET_S = 10
WINDOW_S = 300
# Upper bounds (ms) of the latency histogram's bins; the last bin is open.
LATENCY_BOUNDS_MS = (50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 60000)


def circuit_key(provider_id: str) -> str:
    return f"relay:circuit:{{{provider_id}}}"


def stats_key(provider_id: str, bucket: int) -> str:
    return f"relay:health:{{{provider_id}}}:{bucket}"


def latency_bin(latency_ms: int) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


@dataclass(frozen=True, slots=True)
class CircuitState:
    state: str  # closed | open
    failures: int
    open_until_ms: int
    probe_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    state: str
    failures: int
    open_until_ms: int
    changed: bool


@dataclass(frozen=True, slots=True)
class WindowStats:
    attempts: int
    errors: int
    p95_ms: int | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None


def p95_from_bins(bins: Sequence[int]) -> int | None:
    total = sum(bins)
    if total == 0:
        return None
    threshold = 0.95 * total
    seen = 0
    for i, count in enumerate(bins):
        seen += count
        if seen >= threshold:
            return LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else LATENCY_BOUNDS_MS[-1] * 2
    return None


def circuit_reads(provider_ids: Sequence[str]) -> tuple[list[list[Any]], Callable[[Sequence[Any]], dict[str, CircuitState]]]:
    """The circuit reads as commands (sent with other plan-time reads: one round trip) and
    the parser of their replies, in order."""
    ids = list(provider_ids)
    commands: list[list[Any]] = [["HMGET", circuit_key(pid), "state", "failures", "open_until", "probe_until"] for pid in ids]

    def read(replies: Sequence[Any]) -> dict[str, CircuitState]:
        states: dict[str, CircuitState] = {}
        for pid, reply in zip(ids, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            state, failures, open_until, probe_until = reply
            states[pid] = CircuitState(
                (state or b"closed").decode(), int(failures or 0), int(open_until or 0), int(probe_until or 0)
            )
        return states

    return commands, read


class RedisHealthStore:
    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        text = resources.files("relay_server.storage.redis").joinpath("scripts", "circuit.lua").read_text("utf-8")
        self._circuit = redis.register_script(text)

    async def circuit_op(self, provider_id: str, op: str, *, threshold: int, cooldown_ms: int, lease_ms: int) -> list:
        now_ms = int(self._clock() * 1000)
        return await self._circuit(
            keys=[circuit_key(provider_id)], args=[op, now_ms, threshold, cooldown_ms, lease_ms]
        )

    @property
    def client(self) -> Redis:
        return self._redis

    async def circuits(self, provider_ids: Sequence[str]) -> dict[str, CircuitState]:
        if not provider_ids:
            return {}
        commands, read = circuit_reads(provider_ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return read(await pipe.execute())

    async def record_attempt(self, provider_id: str, *, ok: bool, latency_ms: int) -> None:
        await self.record_attempts([(provider_id, self._clock(), ok, latency_ms)])

    async def record_attempts(self, samples: Sequence[tuple[str, float, bool, int]]) -> None:
        """Many attempts (provider id, epoch seconds, ok, latency ms), summed per bucket, in one round trip."""
        counts: dict[str, Counter[str]] = {}
        for provider_id, at, ok, latency_ms in samples:
            fields = counts.setdefault(stats_key(provider_id, int(at) // BUCKET_S * BUCKET_S), Counter())
            fields["n"] += 1
            if not ok:
                fields["err"] += 1
            fields[f"b{latency_bin(latency_ms)}"] += 1
        if not counts:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, fields in counts.items():
                for name, n in fields.items():
                    pipe.hincrby(key, name, n)
                pipe.expire(key, WINDOW_S + 2 * BUCKET_S)
            await pipe.execute()

    async def window(self, provider_id: str) -> WindowStats:
        now = int(self._clock())
        first = (now - WINDOW_S) // BUCKET_S * BUCKET_S + BUCKET_S
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in range(first, now + 1, BUCKET_S):
                pipe.hgetall(stats_key(provider_id, bucket))
            replies = await pipe.execute()
        attempts = errors = 0
        bins = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for reply in replies:
            for field, value in reply.items():
                name, count = field.decode(), int(value)
                if name == "n":
                    attempts += count
                elif name == "err":
                    errors += count
                elif name.startswith("b"):
                    bins[int(name[1:])] += count
        return WindowStats(attempts, errors, p95_from_bins(bins))

    async def reset_window(self, provider_id: str) -> None:
        now = int(self._clock())
        first = (now - WINDOW_S) // BUCKET_S * BUCKET_S
        await self._redis.delete(*(stats_key(provider_id, b) for b in range(first, now + 1, BUCKET_S)))

    async def try_lead(self, name: str, owner: str, ttl_ms: int) -> bool:
        """A lease for one background loop across workers: take it or renew it if ours."""
        key = f"relay:lease:{name}"
        if await self._redis.set(key, owner, nx=True, px=ttl_ms):
            return True
        current = await self._redis.get(key)
        if current is not None and (current.decode() if isinstance(current, bytes) else current) == owner:
            await self._redis.pexpire(key, ttl_ms)
            return True
        return False
