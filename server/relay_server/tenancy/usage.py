"""What the usage API reads: usage rollups and the request log, billing periods, and what a key
has spent in its cap window.  Every read runs in the tenant's RLS-scoped transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from redis.asyncio import Redis

from relay_server.domain.usage import UsageFilter
from relay_server.pipeline.steps.spend import cap_window
from relay_server.storage.postgres.billing import BillingStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.silos import DataPlane
from relay_server.storage.postgres.usage import PostgresSpendLedger, UsageQueries
from relay_server.storage.redis.spend import RedisSpend, cap_keys


class UsageReports:
    def __init__(self, db: Database | DataPlane, redis: Redis | None = None, cold: Any = None) -> None:
        # ``cold``: archived months of the request log (storage/archive/cold.py); usage rollups are never archived.
        self._queries = UsageQueries(db, cold=cold)
        self._billing = BillingStore(db)
        self._ledger = PostgresSpendLedger(db)
        self._spend = RedisSpend(redis) if redis is not None else None

    async def usage(
        self, tenant_id: str, filters: UsageFilter, group_by: str | None, max_groups: int = 0
    ) -> list[dict[str, Any]]:
        """Rows grouped by ``group_by`` (day, model, api_key, end_user), or one total row for None."""
        return await self._queries.usage(tenant_id, filters, group_by, max_groups)

    async def key(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        return await self._queries.key_exists(tenant_id, key_id)

    async def requests(
        self, tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None, limit: int,
    ) -> list[dict[str, Any]]:  # fmt: skip
        return await self._queries.requests(tenant_id, filters, start, end, after, limit)

    async def periods(
        self, tenant_id: str, environment: str | None, before: tuple[date, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        return await self._billing.periods(tenant_id, environment, before, limit)

    async def cap_spent(self, tenant_id: str, key_id: str, window_name: str) -> int:
        """The live counter when Redis has it, else the request log's sum over the window."""
        window = cap_window(window_name, datetime.now(UTC))
        if self._spend is not None:
            try:
                state = await self._spend.read(cap_keys(tenant_id, "key", key_id, window.window_id)[0])
            except Exception:  # noqa: BLE001 - Redis down: Postgres has the truth
                state = None
            if state is not None:
                return state[0]
        return await self._ledger.spent_micros(
            tenant_id, key_id=key_id, environment=None, start=window.start, end=window.end
        )
