"""Which database holds a tenant's data plane, as every worker sees it.

One lookup per tenant (the ``tenant_config`` entry ``data_placement`` in the
pool), kept in the tenant-policy cache and dropped on every worker by the
invalidation bus when the tenant or its configuration changes — which is how
``relay tenants move-to-silo`` switches a tenant's writes: it commits the new
placement, then publishes a ``tenant`` change and waits for every worker's
acknowledgement.  The TTL is only the safety net for a lost message.
"""

from __future__ import annotations

from relay_server.cache.policy_cache import PolicyCache
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.silos import PLACEMENT_KEY, silo_of


class PlacementReader:
    def __init__(self, db: Database, *, ttl_s: float = 60.0) -> None:
        self._db = db
        self.cache: PolicyCache[str, str | None] = PolicyCache(
            "placement", ttl_s=ttl_s, tags=lambda t, _v: [("tenant", t), ("config", t)]
        )

    async def silo(self, tenant_id: str) -> str | None:
        """The tenant's silo name; None for the pool."""
        return await self.cache.get(tenant_id, lambda: self._load(tenant_id))

    async def _load(self, tenant_id: str) -> str | None:
        async with self._db.system_tx() as conn:
            row = await (
                await conn.execute(
                    "SELECT value FROM tenant_config WHERE tenant_id = %s AND key = %s", (tenant_id, PLACEMENT_KEY)
                )
            ).fetchone()
        return silo_of(row["value"]) if row else None
