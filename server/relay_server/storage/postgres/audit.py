"""The audit log: one row per sensitive action, written by the same
transaction as the change it records (so neither exists without the other).

``relay_app`` may only insert and read it (append-only for the application).
Rows with a NULL tenant are platform actions (a hard deletion, for one): only
the system pool sees them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.domain.audit import AuditRow
from relay_server.ids import new_id
from relay_server.storage.postgres.pages import newest_first
from relay_server.storage.postgres.pool import Conn

_COLUMNS = (
    "id, tenant_id, actor_id, actor_type, action, resource_type, resource_id, metadata, "
    "host(ip_address) AS ip_address, request_id, created_at"
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    tenant_id: str | None
    actor_id: str
    actor_type: str  # user | api_key | platform_admin | system
    action: str  # api_key.created, tenant.status_changed, ...
    resource_type: str | None = None
    resource_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    ip_address: str | None = None
    request_id: str | None = None


def _valid_ip(value: str | None) -> str | None:
    """INET accepts only addresses: anything else (a hostname, garbage) is dropped, not fatal."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


async def insert_audit(conn: Conn, entry: AuditEntry) -> str:
    audit_id = new_id("aud")
    await conn.execute(
        """INSERT INTO audit_log (id, tenant_id, actor_id, actor_type, action, resource_type, resource_id,
                                  metadata, ip_address, request_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::inet, %s)""",
        (
            audit_id,
            entry.tenant_id,
            entry.actor_id,
            entry.actor_type,
            entry.action,
            entry.resource_type,
            entry.resource_id,
            Jsonb(dict(entry.metadata)),
            _valid_ip(entry.ip_address),
            entry.request_id,
        ),
    )
    return audit_id


async def find_replay(conn: Conn, *, request_id: str, action: str, tenant_id: str | None) -> AuditRow | None:
    """The earlier row of an action done under this request id (an idempotent retry).

    ``tenant_id`` None searches every tenant (tenant creation: the tenant is
    what the first call made); otherwise only that tenant's rows.
    """
    where = "request_id = %s AND action = %s"
    params: list[Any] = [request_id, action]
    if tenant_id is not None:
        where += " AND tenant_id = %s"
        params.append(tenant_id)
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY created_at LIMIT 1", params)
    row = await cur.fetchone()
    return _audit(row) if row else None


async def list_audit(
    conn: Conn,
    *,
    tenant_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
    action: str | None = None,
    resource_id: str | None = None,
    every_tenant: bool = False,
) -> list[AuditRow]:
    """Newest first.  ``tenant_id`` None lists platform actions (NULL tenant); ``every_tenant``
    lists every row (the system pool only: it crosses tenants)."""
    where = ["true" if every_tenant else "tenant_id = %s" if tenant_id is not None else "tenant_id IS NULL"]
    params: list[Any] = [tenant_id] if tenant_id is not None and not every_tenant else []
    if action:
        where.append("action = %s")
        params.append(action)
    if resource_id:
        where.append("resource_id = %s")
        params.append(resource_id)
    rows = await newest_first(
        conn, table="audit_log", columns=_COLUMNS, where=where, params=params, after=after, limit=limit
    )
    return [_audit(r) for r in rows]


def _audit(row: Mapping[str, Any]) -> AuditRow:
    return AuditRow(**{**dict(row), "metadata": dict(row["metadata"] or {})})
