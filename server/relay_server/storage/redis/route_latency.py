"""Per-route latency EWMAs in Redis: ``relay:{route-ewma}:<model id>:<provider id>``.

Every route's key shares one hash tag, so the script that records a batch of
samples for many routes stays in one slot on a Redis Cluster (the data is a
few small hashes; one slot holds them all).

Written by ``route_ewma.lua`` (many samples per call, batched off the request path);
read by the planner as plain ``HMGET`` commands sent with its other plan-time reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from relay_server.storage.redis.limits import load_script

ALPHA = 0.3
TTL_S = 24 * 3600  # a route nobody used for a day is unmeasured again


@dataclass(frozen=True, slots=True)
class RouteEwma:
    ttft_ms: float
    total_ms: float
    at_ms: int  # when the last sample was taken
    samples: int = 0


def ewma_key(model_id: str, provider_id: str) -> str:
    return f"relay:{{route-ewma}}:{model_id}:{provider_id}"


def ewma_reads(
    pairs: Sequence[tuple[str, str]],
) -> tuple[list[list[Any]], Callable[[Sequence[Any]], dict[tuple[str, str], RouteEwma]]]:
    """HMGET commands for the routes, and the parser of their replies (in order)."""
    wanted = list(pairs)
    commands: list[list[Any]] = [["HMGET", ewma_key(m, p), "ttft", "total", "at", "n"] for m, p in wanted]

    def read(replies: Sequence[Any]) -> dict[tuple[str, str], RouteEwma]:
        out: dict[tuple[str, str], RouteEwma] = {}
        for pair, reply in zip(wanted, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            ttft, total, at, n = reply
            if ttft is not None and total is not None:
                out[pair] = RouteEwma(float(ttft), float(total), int(at or 0), int(n or 0))
        return out

    return commands, read


class RedisRouteLatency:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(load_script("route_ewma.lua"))

    async def record(self, samples: Sequence[tuple[str, str, int, int, int]]) -> None:
        """(model id, provider id, ttft ms, total ms, at ms) samples, in one script call."""
        if not samples:
            return
        keys = [ewma_key(m, p) for m, p, *_ in samples]
        args: list[Any] = [ALPHA, TTL_S]
        for _, _, ttft, total, at in samples:
            args.extend((ttft, total, at))
        await self._script(keys=keys, args=args)

    async def read(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], RouteEwma]:
        commands, parse = ewma_reads(pairs)
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return parse(await pipe.execute())
