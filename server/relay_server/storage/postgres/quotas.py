"""Policies the limits and caps are made of: plan quotas, tenant overrides,
per-key limits and caps, and tenant config (markup, tenant cap).

Read rarely: the pipeline caches every answer (``cache/policy_cache.py``),
refreshes it in the background and keeps serving the last one while Postgres
is away.  Reads use the system pool with a short connection timeout, so a
first-time read during an outage fails fast instead of waiting on the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from relay_server.domain.policy import KeyPolicy, QuotaRow, parse_key_overrides
from relay_server.storage.postgres.pool import Database


class PostgresQuotaStore:
    def __init__(self, db: Database, *, timeout_s: float = 2.0) -> None:
        self._db = db
        self._timeout = timeout_s

    async def plan_quotas(self) -> Mapping[str, Sequence[QuotaRow]]:
        async with self._db.system.connection(timeout=self._timeout) as conn:
            rows = await (
                await conn.execute("SELECT plan, resource, limit_value, time_window FROM quota_definitions")
            ).fetchall()
        plans: dict[str, list[QuotaRow]] = {}
        for r in rows:
            plans.setdefault(r["plan"], []).append(QuotaRow(r["resource"], r["time_window"], int(r["limit_value"])))
        return plans

    async def tenant_overrides(self, tenant_id: str) -> Sequence[QuotaRow]:
        async with self._db.system.connection(timeout=self._timeout) as conn:
            rows = await (
                await conn.execute(
                    "SELECT resource, time_window, limit_value, expires_at FROM quota_overrides "
                    "WHERE tenant_id = %s AND (expires_at IS NULL OR expires_at > now())",
                    (tenant_id,),
                )
            ).fetchall()
        return [QuotaRow(r["resource"], r["time_window"], int(r["limit_value"]), r["expires_at"]) for r in rows]

    async def key_policy(self, key_id: str) -> KeyPolicy | None:
        async with self._db.system.connection(timeout=self._timeout) as conn:
            row = await (
                await conn.execute(
                    "SELECT rate_limit_overrides, spend_cap_micros, spend_cap_window FROM api_keys WHERE id = %s",
                    (key_id,),
                )
            ).fetchone()
        if row is None:
            return None
        cap = row["spend_cap_micros"]
        return KeyPolicy(
            rate_limits=parse_key_overrides(row["rate_limit_overrides"]),
            spend_cap_micros=int(cap) if cap is not None else None,
            spend_cap_window=row["spend_cap_window"],
        )


class PostgresTenantConfig:
    """tenant_config rows of one tenant as a dict (values are text, as stored)."""

    def __init__(self, db: Database, *, timeout_s: float = 2.0) -> None:
        self._db = db
        self._timeout = timeout_s

    async def tenant_config(self, tenant_id: str) -> Mapping[str, str]:
        async with self._db.system.connection(timeout=self._timeout) as conn:
            rows = await (
                await conn.execute("SELECT key, value FROM tenant_config WHERE tenant_id = %s", (tenant_id,))
            ).fetchall()
        return {r["key"]: r["value"] for r in rows}
