"""The ``tenants`` table.

Status, plan and placement change only through the system pool (``relay_app``
may update ``name`` and ``metadata`` alone), and status changes only through
``relay_server.tenancy.lifecycle``, which calls ``set_status`` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from relay_server.domain.tenants import TenantRow
from relay_server.storage.postgres.pages import newest_first
from relay_server.storage.postgres.pool import Conn

_COLUMNS = (
    "id, slug, name, plan, status, status_changed_at, trial_ends_at, "
    "created_at, updated_at, deleted_at, metadata"
)


def _tenant(row: Mapping[str, Any]) -> TenantRow:
    values = dict(row)
    values["metadata"] = {str(k): str(v) for k, v in (row["metadata"] or {}).items()}
    return TenantRow(**values)


async def insert_tenant(
    conn: Conn,
    *,
    tenant_id: str,
    slug: str,
    name: str,
    plan: str,
    metadata: Mapping[str, str],
    status: str = "provisioning",
) -> TenantRow:
    """Insert a tenant; a taken slug raises ``psycopg.errors.UniqueViolation``."""
    cur = await conn.execute(
        f"""INSERT INTO tenants (id, slug, name, plan, status, metadata)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
        (tenant_id, slug, name, plan, status, Jsonb(dict(metadata))),
    )
    row = await cur.fetchone()
    assert row is not None
    return _tenant(row)


async def tenant_status(conn: Conn, tenant_id: str) -> str | None:
    """The tenant's status; None when there is no such tenant."""
    row = await (await conn.execute("SELECT status FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
    return str(row["status"]) if row else None


async def get_tenant(conn: Conn, tenant_id: str, *, lock: bool = False) -> TenantRow | None:
    """One tenant; ``lock`` takes the row lock that serialises status changes."""
    suffix = " FOR UPDATE" if lock else ""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM tenants WHERE id = %s{suffix}", (tenant_id,))
    row = await cur.fetchone()
    return _tenant(row) if row else None


async def list_tenants(
    conn: Conn, *, status: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[TenantRow]:
    """Newest first; ``after`` is the (created_at, id) of the previous page's last row."""
    where = ["status = %s"] if status else []
    params = [status] if status else []
    rows = await newest_first(
        conn, table="tenants", columns=_COLUMNS, where=where, params=params, after=after, limit=limit
    )
    return [_tenant(r) for r in rows]


async def set_status(conn: Conn, tenant_id: str, status: str, *, trial_length: timedelta | None = None) -> TenantRow:
    """Write a new status (validated by the caller).  ``deleted_at`` follows the status;
    ``trial_length`` starts a trial that ends that long after this change."""
    cur = await conn.execute(
        f"""UPDATE tenants
               SET status = %(status)s,
                   status_changed_at = now(),
                   deleted_at = CASE WHEN %(status)s = 'deleted' THEN now() END,
                   trial_ends_at = COALESCE(now() + %(trial)s::interval, trial_ends_at)
             WHERE id = %(id)s
         RETURNING {_COLUMNS}""",
        {"status": status, "trial": trial_length, "id": tenant_id},
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(tenant_id)
    return _tenant(row)


async def update_tenant(conn: Conn, tenant_id: str, changes: Mapping[str, Any]) -> TenantRow | None:
    """Set ``name`` / ``plan`` / ``metadata`` (only the keys given)."""
    allowed = {"name", "plan", "metadata"}
    if not changes or set(changes) - allowed:
        raise ValueError(f"update_tenant takes {sorted(allowed)}, got {sorted(changes)}")
    values = {k: Jsonb(dict(v)) if k == "metadata" else v for k, v in changes.items()}
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
    )
    query = sql.SQL("UPDATE tenants SET {} WHERE id = {} RETURNING " + _COLUMNS).format(
        assignments, sql.Placeholder("_id")
    )
    cur = await conn.execute(query, {**values, "_id": tenant_id})
    row = await cur.fetchone()
    return _tenant(row) if row else None


# --- what the lifecycle sweeps look for -------------------------------------------


async def trials_ended(conn: Conn, now: datetime, limit: int = 500) -> list[str]:
    cur = await conn.execute(
        "SELECT id FROM tenants WHERE status = 'trial' AND trial_ends_at <= %s ORDER BY trial_ends_at LIMIT %s",
        (now, limit),
    )
    return [r["id"] for r in await cur.fetchall()]


async def in_status_since(conn: Conn, status: str, before: datetime, limit: int = 500) -> list[str]:
    """Tenants whose status is ``status`` and last changed at or before ``before``."""
    cur = await conn.execute(
        "SELECT id FROM tenants WHERE status = %s AND status_changed_at <= %s ORDER BY status_changed_at LIMIT %s",
        (status, before, limit),
    )
    return [r["id"] for r in await cur.fetchall()]


async def stuck_provisioning(conn: Conn, before: datetime, limit: int = 100) -> list[str]:
    """Provisioning since ``before`` with no provisioning job queued or running."""
    cur = await conn.execute(
        """SELECT t.id FROM tenants t
            WHERE t.status = 'provisioning' AND t.status_changed_at <= %s
              AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                               WHERE j.task_name = 'provision_tenant' AND j.args ->> 'tenant_id' = t.id
                                 AND j.status IN ('todo', 'doing'))
            ORDER BY t.status_changed_at LIMIT %s""",
        (before, limit),
    )
    return [r["id"] for r in await cur.fetchall()]
