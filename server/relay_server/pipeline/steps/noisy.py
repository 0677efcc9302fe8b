"""Noisy neighbours: a tenant taking a large share of all traffic gets its
limits tightened for a while, automatically.

Each process counts requests per tenant in memory (no Redis call on the
request path) and adds the counts every second to 10-second buckets in
Redis (``relay:traffic:<bucket>``, a hash tenant → requests).  Every few
seconds one process (a short Redis lock) sums the last minute; a tenant whose
share exceeds ``threshold`` — once the platform sees at least
``min_requests`` per minute from at least two tenants (a lone tenant is no
neighbour to anyone) — gets ``relay:{tenant}:noisy`` set to the limit factor
in permille for ``duration_s``.  ``admit.lua`` reads that key and scales the
tenant's plan limits (per-key limits are left alone).  Flagging records an
event (an audit_log row with actor_type ``system``, and a webhook when the
tenant has one); a flag that expires and is set again records a new event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.pipeline.steps.admission import EventSink
from relay_server.storage.redis.limits import noisy_key

log = logging.getLogger(__name__)

BUCKET_S = 10
WINDOW_BUCKETS = 6
_LOCK_KEY = "relay:traffic:evaluator"


def traffic_key(bucket: int) -> str:
    return f"relay:traffic:{bucket}"


class NoisyNeighbours:
    def __init__(
        self,
        redis: Redis,
        events: EventSink | None,
        *,
        threshold: float = 0.5,
        min_requests: int = 600,
        factor: float = 0.5,
        duration_s: int = 300,
        flush_s: float = 1.0,
        evaluate_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._events = events
        self._threshold = threshold
        self._min = min_requests
        self._permille = max(1, min(1000, int(factor * 1000)))
        self._duration = duration_s
        self._flush_s = flush_s
        self._evaluate_s = evaluate_s
        self._clock = clock
        self._counts: Counter[str] = Counter()

    def note(self, tenant_id: str) -> None:
        """One request of the tenant (called on the request path: memory only)."""
        self._counts[tenant_id] += 1

    async def flush(self) -> None:
        counts, self._counts = self._counts, Counter()
        if not counts:
            return
        key = traffic_key(int(self._clock()) // BUCKET_S)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant_id, n in counts.items():
                    pipe.hincrby(key, tenant_id, n)
                pipe.expire(key, BUCKET_S * (WINDOW_BUCKETS + 2))
                await pipe.execute()
        except (TimeoutError, RedisError, OSError):
            self._counts.update(counts)  # try again next flush; the share is approximate anyway

    async def shares(self) -> tuple[int, dict[str, int]]:
        """(all requests, requests per tenant) over the last minute."""
        now_bucket = int(self._clock()) // BUCKET_S
        async with self._redis.pipeline(transaction=False) as pipe:
            for b in range(now_bucket - WINDOW_BUCKETS + 1, now_bucket + 1):
                pipe.hgetall(traffic_key(b))
            buckets = await pipe.execute()
        per_tenant: Counter[str] = Counter()
        for bucket in buckets:
            for tenant, n in bucket.items():
                per_tenant[tenant.decode() if isinstance(tenant, bytes) else tenant] += int(n)
        return sum(per_tenant.values()), dict(per_tenant)

    async def evaluate(self) -> list[str]:
        """Flag tenants above the threshold; returns the tenants newly flagged."""
        if not await self._redis.set(_LOCK_KEY, b"1", nx=True, px=int(self._evaluate_s * 800)):
            return []  # another process evaluates this round
        total, per_tenant = await self.shares()
        if total < self._min or len(per_tenant) < 2:
            return []
        flagged: list[str] = []
        for tenant_id, n in per_tenant.items():
            share = n / total
            if share <= self._threshold:
                continue
            if await self._redis.set(noisy_key(tenant_id), str(self._permille), nx=True, ex=self._duration):
                flagged.append(tenant_id)
                await self._record(tenant_id, share, n, total)
        return flagged

    async def _record(self, tenant_id: str, share: float, requests: int, total: int) -> None:
        log.warning("noisy neighbour: tightening limits", extra={"tenant_id": tenant_id, "share": round(share, 3)})
        if self._events is None:
            return
        started = int(self._clock())
        payload: dict[str, object] = {
            "type": "tenant.rate_limits_tightened",
            "tenant_id": tenant_id,
            "share": f"{share:.3f}",
            "requests_last_minute": requests,
            "platform_requests_last_minute": total,
            "limit_factor": f"{self._permille / 1000:.3f}",
            "until": started + self._duration,
        }
        try:
            await self._events.emit(tenant_id, "tenant.rate_limits_tightened", f"noisy:{tenant_id}:{started}", payload)
        except Exception:
            log.exception("could not record the noisy-neighbour event", extra={"tenant_id": tenant_id})

    async def run(self) -> None:
        """Flush every ``flush_s``, evaluate every ``evaluate_s``; runs until cancelled."""
        last_eval = 0.0
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()
            now = time.monotonic()
            if now - last_eval >= self._evaluate_s:
                last_eval = now
                try:
                    await self.evaluate()
                except (TimeoutError, RedisError, OSError) as exc:
                    log.debug("noisy-neighbour evaluation skipped", extra={"error": repr(exc)})
