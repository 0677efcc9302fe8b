"""``provider_health_events`` beyond status changes: batch inserts, the operator's list, retention.

Inserts come in batches from the per-process buffer (``observability/provider_events.py``),
as the owner (``relay_app`` may only read the table).  An event of a provider the
directory no longer has is dropped, not an error.  Anomalies and failure bursts are
seen by several workers at once (each has its own detector, and a new monitor leader
may see a burst again), so such an event is skipped when its provider already has
one of the same kind and signal within ``DEDUPE_S``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from relay_server.domain.provider_events import MAX_MESSAGE, ProviderEvent, ProviderEventRow
from relay_server.ids import new_id
from relay_server.storage.postgres.pages import newest_first
from relay_server.storage.postgres.pool import Database

DEDUPE_S = 300
_DEDUPED = ("anomaly", "failure_burst")
_COLUMNS = "id, provider_id, kind, status, message, error_rate, p95_ms, created_at"

_INSERT = """
INSERT INTO provider_health_events (id, provider_id, kind, signal, status, error_rate, p95_ms, message, created_at)
SELECT %(id)s, %(provider_id)s, %(kind)s, %(signal)s, NULL, %(error_rate)s, %(p95_ms)s, %(message)s, %(at)s
 WHERE EXISTS (SELECT 1 FROM providers WHERE id = %(provider_id)s)
   AND NOT (%(dedupe)s AND EXISTS (
        SELECT 1 FROM provider_health_events
         WHERE provider_id = %(provider_id)s AND kind = %(kind)s AND signal IS NOT DISTINCT FROM %(signal)s
           AND created_at > %(at)s - make_interval(secs => %(dedupe_s)s)))
"""


class PostgresProviderEvents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, events: Iterable[ProviderEvent]) -> int:
        """Write a batch in one transaction; returns how many rows were written."""
        written = 0
        async with self._db.system_tx() as conn:
            # Locks taken in one order by every worker: two batches cannot deadlock.
            for event in sorted(events, key=lambda e: (e.provider_id, e.kind, e.at)):
                # One writer at a time per (provider, kind): two workers' copies of an anomaly cannot both miss each other.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"relay-phe:{event.provider_id}:{event.kind}",)
                )
                cur = await conn.execute(_INSERT, {
                    "id": new_id("phe"), "provider_id": event.provider_id, "kind": event.kind, "signal": event.signal,
                    "error_rate": None if event.error_rate is None else Decimal(str(round(event.error_rate, 4))),
                    "p95_ms": event.p95_ms, "message": event.message[:MAX_MESSAGE], "at": event.at,
                    "dedupe": event.kind in _DEDUPED, "dedupe_s": DEDUPE_S,
                })  # fmt: skip
                written += cur.rowcount
        return written

    async def list(
        self,
        *,
        provider_id: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[ProviderEventRow]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last event."""
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("provider_id = %s", provider_id), ("kind = %s", kind),
                              ("created_at >= %s", since), ("created_at < %s", until)):  # fmt: skip
            if value is not None:
                where.append(clause)
                params.append(value)
        async with self._db.system_tx() as conn:
            rows = await newest_first(
                conn, table="provider_health_events", columns=_COLUMNS, where=where, params=params, after=after, limit=limit
            )
        return [
            ProviderEventRow(**{**dict(r), "error_rate": None if r["error_rate"] is None else float(r["error_rate"])})
            for r in rows
        ]

    async def purge(self, before: datetime) -> int:
        """Delete the events older than ``before`` (retention); returns how many."""
        async with self._db.system_tx() as conn:
            cur = await conn.execute("DELETE FROM provider_health_events WHERE created_at < %s", (before,))
            return cur.rowcount
