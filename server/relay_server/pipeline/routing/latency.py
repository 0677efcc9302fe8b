"""Route latency for the lowest-latency strategy: samples in, EWMAs out.

Each attempt's latencies (time to first token, total) are buffered here and written to
Redis in one script call per ``flush_s`` (``storage/redis/route_latency.py``): the request
never waits for it.  Reads go with the planner's other Redis reads (one round trip).
Without Redis, or while it is unreachable, the EWMAs live in this worker's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from redis.exceptions import RedisError

from relay_server.storage.redis.route_latency import ALPHA, RedisRouteLatency, RouteEwma

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (model id, provider id)


class RouteLatency:
    def __init__(
        self, store: RedisRouteLatency | None, *, flush_s: float = 0.05, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self._flush_s = flush_s
        self._clock = clock
        self._pending: list[tuple[str, str, int, int, int]] = []
        self._local: dict[Pair, RouteEwma] = {}
        self._flusher: asyncio.Task[None] | None = None

    def note(self, model_id: str, provider_id: str, ttft_ms: int, total_ms: int) -> None:
        """One finished attempt (never raises, never waits)."""
        at = int(self._clock() * 1000)
        self._fold(model_id, provider_id, ttft_ms, total_ms, at)
        if self.store is None:
            return
        self._pending.append((model_id, provider_id, ttft_ms, total_ms, at))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def _fold(self, model_id: str, provider_id: str, ttft: float, total: float, at: int) -> None:
        old = self._local.get((model_id, provider_id))
        if old is not None:
            ttft = ALPHA * ttft + (1 - ALPHA) * old.ttft_ms
            total = ALPHA * total + (1 - ALPHA) * old.total_ms
        self._local[(model_id, provider_id)] = RouteEwma(ttft, total, at, (old.samples if old else 0) + 1)

    def local(self, pairs: Sequence[Pair]) -> dict[Pair, RouteEwma]:
        return {p: self._local[p] for p in pairs if p in self._local}

    async def read(self, pairs: Sequence[Pair]) -> dict[Pair, RouteEwma]:
        if self.store is None or not pairs:
            return self.local(pairs)
        try:
            return await self.store.read(pairs)
        except (RedisError, OSError):
            log.warning("route latencies unavailable; using this worker's", exc_info=True)
            return self.local(pairs)

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._flush_s)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self.store is None:
            return
        try:
            await self.store.record(pending)
        except (RedisError, OSError):
            log.warning("route latency samples not written (kept in this worker)", exc_info=True)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self.flush()
