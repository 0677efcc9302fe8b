"""Tenant events: an audit_log row (actor_type ``system``) and, when the
tenant configured a ``webhook_url``, a ``webhook_deliveries`` row that the
webhook worker delivers with retries.

Both rows are keyed by the event id (``spend_cap.warning:key:key_x:d20260115``),
so an event raised twice — two processes, a retry after a timeout — is
recorded and delivered once.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.ids import new_id
from relay_server.storage.postgres.pool import Database

_LEASE = timedelta(seconds=60)  # a delivery in flight this long is presumed lost and retried
_MAX_BACKOFF_S = 3600.0

_CLAIM = """
UPDATE webhook_deliveries
   SET status = 'delivering', attempts = attempts + 1, next_attempt_at = now() + %s
 WHERE id IN (SELECT id FROM webhook_deliveries
               WHERE status IN ('pending', 'failed', 'delivering') AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, tenant_id, event_id, event_type, url, payload, attempts, created_at
"""


def audit_id(event_id: str) -> str:
    return "al_evt_" + hashlib.sha256(event_id.encode()).hexdigest()[:32]


def backoff_s(attempts: int, *, base_s: float = 5.0, rng: random.Random | None = None) -> float:
    """Exponential with full jitter in [50%, 100%]: 5 s, 10 s, 20 s, ... capped at an hour."""
    delay = min(_MAX_BACKOFF_S, base_s * 2 ** max(0, attempts - 1))
    return delay * (0.5 + 0.5 * (rng or random).random())


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    tenant_id: str
    event_id: str
    event_type: str
    url: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


class PostgresEvents:
    """The ``EventSink`` of the pipeline and workers."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def emit(self, tenant_id: str, event_type: str, event_id: str, payload: dict[str, Any]) -> None:
        resource_type = "api_key" if payload.get("key_id") else "tenant"
        resource_id = payload.get("key_id") or tenant_id
        async with self._db.system_tx() as conn:
            await conn.execute(
                "INSERT INTO audit_log (id, tenant_id, actor_id, actor_type, action, resource_id, resource_type, metadata) "
                "VALUES (%s, %s, 'system', 'system', %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (audit_id(event_id), tenant_id, event_type, resource_id, resource_type, Jsonb({"event_id": event_id, **payload})),
            )
            row = await (
                await conn.execute(
                    "SELECT value FROM tenant_config WHERE tenant_id = %s AND key = 'webhook_url'", (tenant_id,)
                )
            ).fetchone()
            url = (row["value"] or "").strip() if row else ""
            if url:
                await conn.execute(
                    "INSERT INTO webhook_deliveries (id, tenant_id, event_id, event_type, url, payload) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, event_id, url) DO NOTHING",
                    (new_id("whd"), tenant_id, event_id, event_type, url, Jsonb(payload)),
                )


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, limit: int = 20) -> list[Delivery]:
        async with self._db.system_tx() as conn:
            rows = await (await conn.execute(_CLAIM, (_LEASE, limit))).fetchall()
        return [Delivery(**r) for r in rows]

    async def secret(self, tenant_id: str) -> str | None:
        async with self._db.system.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT value FROM tenant_config WHERE tenant_id = %s AND key = 'webhook_secret'", (tenant_id,)
                )
            ).fetchone()
        return row["value"] if row and row["value"] else None

    async def delivered(self, delivery_id: str, status_code: int) -> None:
        async with self._db.system_tx() as conn:
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status_code = %s, "
                "last_error = NULL WHERE id = %s",
                (status_code, delivery_id),
            )

    async def failed(
        self, delivery: Delivery, error: str, status_code: int | None, *, max_attempts: int, now: datetime | None = None
    ) -> str:
        """Record a failed attempt; 'dead' after ``max_attempts``, else 'failed' with the next attempt scheduled."""
        status = "dead" if delivery.attempts >= max_attempts else "failed"
        next_at = (now or datetime.now(UTC)) + timedelta(seconds=backoff_s(delivery.attempts))
        async with self._db.system_tx() as conn:
            await conn.execute(
                "UPDATE webhook_deliveries SET status = %s, last_error = %s, last_status_code = %s, next_attempt_at = %s "
                "WHERE id = %s",
                (status, error[:1000], status_code, next_at, delivery.id),
            )
        return status
