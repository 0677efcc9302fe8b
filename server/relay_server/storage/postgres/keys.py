"""API keys by hash: the authentication lookup, and ``last_used_at``.

Both run on the system pool because they are inherently cross-tenant: the
tenant is what the key tells us.  Everything else about keys runs inside a
tenant transaction (``api_keys.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime

from relay_server.domain.keys import KeyRecord
from relay_server.storage.postgres.pool import Database

log = logging.getLogger(__name__)

_FIND_BY_HASH = """
SELECT k.id, k.key_hash, k.key_hint, k.tenant_id, k.environment, k.scope, k.status,
       k.expires_at, k.grace_expires_at, k.end_user_id, k.allowed_models, k.parent_key_id,
       k.rate_limit_overrides, k.spend_cap_micros, k.spend_cap_window,
       t.status AS tenant_status, t.plan AS tenant_plan,
       (SELECT c.value FROM tenant_config c WHERE c.tenant_id = k.tenant_id AND c.key = 'allowed_models')
           AS tenant_allowed_models,
       (SELECT c.value FROM tenant_config c WHERE c.tenant_id = k.tenant_id AND c.key = 'write_paused_until')
           AS writes_paused_until,
       (SELECT c.value FROM tenant_config c WHERE c.tenant_id = k.tenant_id AND c.key = 'allowed_regions')
           AS tenant_allowed_regions,
       ARRAY(SELECT pm.model_id FROM plan_models pm WHERE pm.plan = t.plan ORDER BY pm.model_id) AS plan_allowed_models
  FROM api_keys k
  JOIN tenants t ON t.id = k.tenant_id
 WHERE k.key_hash = %s
"""

# One statement for a whole batch; GREATEST keeps a late, older batch from
# moving the time backwards.
_TOUCH = """
UPDATE api_keys k
   SET last_used_at = GREATEST(k.last_used_at, u.used_at)
  FROM unnest(%s::text[], %s::timestamptz[]) AS u (id, used_at)
 WHERE k.id = u.id
"""


def _model_list(raw: str | None) -> tuple[str, ...]:
    """tenant_config ``allowed_models`` (a JSON array of names, validated on write).

    An unreadable value restricts to nothing rather than to everything: a
    restriction that cannot be read must not silently open every model.
    """
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        log.warning("unreadable tenant allowed_models; the tenant may call no model until it is fixed")
        return ("\x00none",)
    return tuple(value)


def _moment(raw: str | None) -> datetime | None:
    """tenant_config ``write_paused_until`` (ISO 8601, written by the silo move); unreadable: no pause."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        log.warning("unreadable tenant write_paused_until ignored")
        return None


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
            tenant_allowed_models=_model_list(row["tenant_allowed_models"]),
            tenant_allowed_regions=_model_list(row["tenant_allowed_regions"]),
            plan_allowed_models=tuple(row["plan_allowed_models"] or ()),
            parent_key_id=row["parent_key_id"],
            rate_limit_overrides={str(k): int(v) for k, v in (row["rate_limit_overrides"] or {}).items()},
            spend_cap_micros=row["spend_cap_micros"],
            spend_cap_window=row["spend_cap_window"],
            writes_paused_until=_moment(row["writes_paused_until"]),
        )

    async def touch_last_used(self, used: Mapping[str, datetime]) -> int:
        """Record when keys were last used, in one UPDATE; returns rows changed."""
        if not used:
            return 0
        ids = list(used)
        async with self._db.system_tx() as conn:
            cur = await conn.execute(_TOUCH, (ids, [used[i] for i in ids]))
        return cur.rowcount
