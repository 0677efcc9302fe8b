"""Per-tenant configuration and feature flags (``tenant_config``,
``plan_features``, ``tenant_feature_overrides``).  Called inside ``tenant_tx``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from relay_server.domain.tenants import FeatureState
from relay_server.storage.postgres.pool import Conn


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Everything the config reader needs, read in one transaction."""

    plan: str
    values: dict[str, str]
    features: list[FeatureState]


async def read_config(conn: Conn, tenant_id: str) -> dict[str, str]:
    cur = await conn.execute("SELECT key, value FROM tenant_config WHERE tenant_id = %s ORDER BY key", (tenant_id,))
    return {r["key"]: r["value"] for r in await cur.fetchall()}


async def write_config(conn: Conn, tenant_id: str, changes: Mapping[str, str]) -> dict[str, str]:
    """Upsert entries; an empty value deletes the entry.  Returns the whole config."""
    for key, value in changes.items():
        if value == "":
            await conn.execute("DELETE FROM tenant_config WHERE tenant_id = %s AND key = %s", (tenant_id, key))
        else:
            await conn.execute(
                """INSERT INTO tenant_config (tenant_id, key, value) VALUES (%s, %s, %s)
                   ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value""",
                (tenant_id, key, value),
            )
    return await read_config(conn, tenant_id)


async def known_features(conn: Conn) -> frozenset[str]:
    cur = await conn.execute("SELECT DISTINCT feature FROM plan_features")
    return frozenset(r["feature"] for r in await cur.fetchall())


async def read_features(conn: Conn, tenant_id: str, plan: str, now: datetime) -> list[FeatureState]:
    """Plan defaults with the tenant's unexpired overrides applied, by feature name."""
    cur = await conn.execute("SELECT feature, enabled FROM plan_features WHERE plan = %s", (plan,))
    states = {r["feature"]: FeatureState(r["feature"], r["enabled"], "plan") for r in await cur.fetchall()}
    cur = await conn.execute(
        """SELECT feature, enabled, reason, expires_at FROM tenant_feature_overrides
            WHERE tenant_id = %s AND (expires_at IS NULL OR expires_at > %s)""",
        (tenant_id, now),
    )
    for r in await cur.fetchall():
        states[r["feature"]] = FeatureState(r["feature"], r["enabled"], "override", r["reason"], r["expires_at"])
    return [states[name] for name in sorted(states)]


async def snapshot(conn: Conn, tenant_id: str, now: datetime) -> ConfigSnapshot | None:
    """Plan, config entries and effective features of a tenant; None if it does not exist."""
    cur = await conn.execute("SELECT plan FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    plan = row["plan"]
    return ConfigSnapshot(plan, await read_config(conn, tenant_id), await read_features(conn, tenant_id, plan, now))


async def set_override(
    conn: Conn, tenant_id: str, feature: str, enabled: bool, reason: str | None, expires_at: datetime | None
) -> None:
    await conn.execute(
        """INSERT INTO tenant_feature_overrides (tenant_id, feature, enabled, reason, expires_at)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, feature) DO UPDATE
              SET enabled = EXCLUDED.enabled, reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at""",
        (tenant_id, feature, enabled, reason, expires_at),
    )


async def delete_override(conn: Conn, tenant_id: str, feature: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM tenant_feature_overrides WHERE tenant_id = %s AND feature = %s", (tenant_id, feature)
    )
    return cur.rowcount > 0
