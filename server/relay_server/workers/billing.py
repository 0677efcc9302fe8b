"""The billing worker: opens, updates and finalizes monthly billing periods.

Each pass takes every (tenant, environment, month) that has usage and whose
period is missing or still open (looking back ``lookback_months``), and
rebuilds the period's line items from ``usage_daily`` (``BillingStore.reconcile``).
Idempotent: a second pass over unchanged usage writes nothing.  Live and test
usage get separate periods; only live periods are invoiced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from relay_server.storage.postgres.billing import BillingStore, PeriodResult

log = logging.getLogger(__name__)


def _months_back(today: date, months: int) -> date:
    year, month = today.year, today.month - months
    while month <= 0:
        month += 12
        year -= 1
    return date(year, month, 1)


class BillingWorker:
    def __init__(
        self,
        store: BillingStore,
        *,
        finalize_delay: timedelta = timedelta(hours=1),
        lookback_months: int = 13,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._delay = finalize_delay
        self._lookback = lookback_months
        self._now = now

    async def run_once(self, now: datetime | None = None) -> list[PeriodResult]:
        now = now or self._now()
        since = _months_back(now.date(), self._lookback)
        results: list[PeriodResult] = []
        for tenant_id, environment, month in await self._store.candidates(since):
            result = await self._store.reconcile(tenant_id, environment, month, now=now, finalize_delay=self._delay)
            if result.status == "finalized":
                log.info("billing period finalized", extra={"period_id": result.period_id, "cost_micros": result.cost_micros})
            results.append(result)
        return results
