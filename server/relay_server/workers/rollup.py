"""The usage aggregator: keeps ``usage_daily`` current.

Each pass recomputes every (tenant, day, environment) bucket the request-log
writer marked, one transaction per bucket (claimed with SKIP LOCKED, so
several processes share the work), until no mark is left — which is also how
it catches up after downtime: marks wait in Postgres.
"""

from __future__ import annotations

import logging

from relay_server.storage.postgres.usage import Bucket, UsageRollupStore

log = logging.getLogger(__name__)


class UsageRollup:
    def __init__(self, store: UsageRollupStore, *, batch: int = 100) -> None:
        self._store = store
        self._batch = batch

    async def run_once(self) -> list[Bucket]:
        """Recompute until nothing is marked; returns the buckets done."""
        done: list[Bucket] = []
        while True:
            batch = await self._store.run_pending(self._batch)
            done += batch
            if len(batch) < self._batch:
                break
        if done:
            log.debug("usage rollup", extra={"buckets": len(done)})
        return done
