"""API keys by hash: the authentication lookup.

The lookup runs on the system pool because it is inherently cross-tenant: the
tenant is what the key tells us.  Everything else about keys runs inside a
tenant transaction.
"""

from __future__ import annotations

from relay_server.pipeline.authenticate import KeyRecord
from relay_server.storage.postgres.pool import Database

_FIND_BY_HASH = """
SELECT k.id, k.key_hash, k.key_hint, k.tenant_id, k.environment, k.scope, k.status,
       k.expires_at, k.grace_expires_at, k.end_user_id, k.allowed_models,
       t.status AS tenant_status, t.plan AS tenant_plan
  FROM api_keys k
  JOIN tenants t ON t.id = k.tenant_id
 WHERE k.key_hash = %s
"""


class PostgresKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        async with self._db.system_tx() as conn:
            row = await (await conn.execute(_FIND_BY_HASH, (key_hash,))).fetchone()
        if row is None:
            return None
        return KeyRecord(
            key_id=row["id"],
            key_hash=row["key_hash"],
            key_hint=row["key_hint"],
            tenant_id=row["tenant_id"],
            tenant_status=row["tenant_status"],
            tenant_plan=row["tenant_plan"],
            environment=row["environment"],
            scope=row["scope"],
            status=row["status"],
            expires_at=row["expires_at"],
            grace_expires_at=row["grace_expires_at"],
            end_user_id=row["end_user_id"],
            allowed_models=tuple(row["allowed_models"] or ()),
        )
