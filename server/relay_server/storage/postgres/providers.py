"""Providers as the router and the health monitor see them.

``load_directory`` reads every provider (with its wire API, default base URL,
priority and operator status) and every route of every model: the model's
own provider first (``models.provider_id``), then the extra routes of
``model_routes``.  ``record_status`` is the health monitor's one write: it
changes ``providers.status`` and appends a ``provider_health_events`` row in
one transaction, only when the status really changes, under a row lock, so
several workers reaching the same verdict write one event.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from relay_server.ids import new_id
from relay_server.storage.postgres.pool import Database

# providers.status <-> health status (the events table speaks the latter).
STATUS_FOR_HEALTH = {"healthy": "active", "degraded": "degraded", "down": "down"}


@dataclass(frozen=True, slots=True)
class ProviderRow:
    id: str
    name: str
    api: str
    base_url: str
    status: str  # active | degraded | down | disabled
    priority: int
    region: str | None = None  # where it processes data (data residency); None: undeclared


@dataclass(frozen=True, slots=True)
class RouteRow:
    model_id: str
    provider_id: str
    provider_name: str
    priority: int | None  # None: the provider's priority
    region: str | None = None  # the route's own region, else its provider's


@dataclass(frozen=True, slots=True)
class Directory:
    providers: dict[str, ProviderRow]
    routes: dict[str, list[RouteRow]]  # model id -> its routes


_PROVIDERS = "SELECT id, name, api, base_url, status, priority, region FROM providers"
_ROUTES = """
SELECT id AS model_id, provider_id, provider_name, NULL::int AS priority, NULL::text AS region, 0 AS primary_order
  FROM models WHERE status <> 'disabled'
UNION ALL
SELECT r.model_id, r.provider_id, r.provider_name, r.priority, r.region, 1 AS primary_order
  FROM model_routes r JOIN models m ON m.id = r.model_id
 WHERE r.status = 'active' AND m.status <> 'disabled'
 ORDER BY model_id, primary_order, provider_id
"""


class PostgresProviderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load_directory(self) -> Directory:
        async with self._db.system_tx() as conn:
            providers = {r["id"]: ProviderRow(**r) for r in await (await conn.execute(_PROVIDERS)).fetchall()}
            routes: dict[str, list[RouteRow]] = {}
            for r in await (await conn.execute(_ROUTES)).fetchall():
                provider = providers.get(r["provider_id"])
                region = r["region"] or (provider.region if provider is not None else None)
                routes.setdefault(r["model_id"], []).append(
                    RouteRow(r["model_id"], r["provider_id"], r["provider_name"], r["priority"], region)
                )
        return Directory(providers, routes)

    async def record_status(
        self,
        provider_id: str,
        health: str,
        *,
        error_rate: float | None,
        p95_ms: int | None,
        message: str | None,
    ) -> bool:
        """Set the provider's status from a health verdict; True if it changed (an event was written).

        A provider an operator disabled stays disabled: health never re-enables it.
        """
        status = STATUS_FOR_HEALTH[health]
        async with self._db.system_tx() as conn:
            cur = await conn.execute("SELECT status FROM providers WHERE id = %s FOR UPDATE", (provider_id,))
            row = await cur.fetchone()
            if row is None or row["status"] in ("disabled", status):
                return False
            await conn.execute("UPDATE providers SET status = %s WHERE id = %s", (status, provider_id))
            await conn.execute(
                """INSERT INTO provider_health_events (id, provider_id, status, error_rate, p95_ms, message)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (
                    new_id("phe"),
                    provider_id,
                    health,
                    Decimal(str(round(error_rate, 4))) if error_rate is not None else None,
                    p95_ms,
                    message[:500] if message else None,
                ),
            )
        return True
