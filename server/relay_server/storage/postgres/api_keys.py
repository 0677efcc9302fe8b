"""API key rows for key management (create, list, update, revoke, rotate).

Called inside ``tenant_tx`` (row-level security confines them to one tenant;
the explicit ``tenant_id`` filters are a second fence, not the only one).
The authentication lookup by hash lives in ``keys.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from relay_server.domain.keys import ApiKeyRow, NewKey
from relay_server.storage.postgres.pages import newest_first
from relay_server.storage.postgres.pool import Conn

_COLUMNS = (
    "id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope, parent_key_id, end_user_id, "
    "allowed_models, rate_limit_overrides, spend_cap_micros, spend_cap_window, status, revoked_at, "
    "grace_expires_at, rotated_to_id, last_used_at, expires_at, created_at, created_by, created_by_key_id"
)

# Columns UpdateApiKey may change.
UPDATABLE = frozenset(
    {"name", "expires_at", "allowed_models", "rate_limit_overrides", "spend_cap_micros", "spend_cap_window"}
)


def _key(row: Mapping[str, Any]) -> ApiKeyRow:
    return ApiKeyRow(
        **{
            **dict(row),
            "allowed_models": tuple(row["allowed_models"] or ()),
            "rate_limit_overrides": {str(k): int(v) for k, v in (row["rate_limit_overrides"] or {}).items()},
        }
    )


async def insert_key(
    conn: Conn, *, key_id: str, tenant_id: str, spec: NewKey, key_hash: str, key_prefix: str, key_hint: str
) -> ApiKeyRow:
    cur = await conn.execute(
        f"""INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope,
                                  parent_key_id, end_user_id, allowed_models, rate_limit_overrides,
                                  spend_cap_micros, spend_cap_window, expires_at, created_by, created_by_key_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
         RETURNING {_COLUMNS}""",
        (
            key_id, tenant_id, spec.name, key_prefix, key_hash, key_hint, spec.environment, spec.scope,
            spec.parent_key_id, spec.end_user_id, list(spec.allowed_models) or None,
            Jsonb(dict(spec.rate_limit_overrides)) if spec.rate_limit_overrides else None,
            spec.spend_cap_micros, spec.spend_cap_window, spec.expires_at, spec.created_by, spec.created_by_key_id,
        ),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None
    return _key(row)


async def get_key(conn: Conn, tenant_id: str, key_id: str, *, lock: bool = False) -> ApiKeyRow | None:
    suffix = " FOR UPDATE" if lock else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = %s AND id = %s{suffix}", (tenant_id, key_id)
    )
    row = await cur.fetchone()
    return _key(row) if row else None


async def list_keys(
    conn: Conn,
    tenant_id: str,
    *,
    status: str | None,
    end_user_id: str | None,
    children_only: bool,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[ApiKeyRow]:
    """Newest first; ``after`` is the (created_at, id) of the previous page's last row."""
    where: list[str] = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    if status:
        where.append("status = %s")
        params.append(status)
    if end_user_id:
        where.append("end_user_id = %s")
        params.append(end_user_id)
    if children_only:
        where.append("parent_key_id IS NOT NULL")
    rows = await newest_first(
        conn, table="api_keys", columns=_COLUMNS, where=where, params=params, after=after, limit=limit
    )
    return [_key(r) for r in rows]


async def update_key(conn: Conn, tenant_id: str, key_id: str, changes: Mapping[str, Any]) -> ApiKeyRow:
    unknown = set(changes) - UPDATABLE
    if not changes or unknown:
        raise ValueError(f"update_key cannot change {sorted(unknown) or 'nothing'}")
    values = dict(changes)
    if "allowed_models" in values:
        values["allowed_models"] = list(values["allowed_models"] or ()) or None
    if "rate_limit_overrides" in values:
        values["rate_limit_overrides"] = Jsonb(dict(values["rate_limit_overrides"])) if values["rate_limit_overrides"] else None
    assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values)
    query = sql.SQL("UPDATE api_keys SET {} WHERE tenant_id = {} AND id = {} RETURNING " + _COLUMNS).format(
        assignments, sql.Placeholder("_tenant"), sql.Placeholder("_id")
    )
    cur = await conn.execute(query, {**values, "_tenant": tenant_id, "_id": key_id})
    row = await cur.fetchone()
    if row is None:
        raise LookupError(key_id)
    return _key(row)


async def revoke_key(conn: Conn, tenant_id: str, key_id: str) -> ApiKeyRow:
    """Revoked now, with no grace (a rotated key's grace ends too)."""
    cur = await conn.execute(
        f"""UPDATE api_keys SET status = 'revoked', revoked_at = COALESCE(revoked_at, now()), grace_expires_at = NULL
             WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}""",
        (tenant_id, key_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(key_id)
    return _key(row)


async def mark_rotated(conn: Conn, tenant_id: str, key_id: str, successor_id: str, grace_until: datetime) -> ApiKeyRow:
    """The old key of a rotation: revoked, but its secret works until ``grace_until``."""
    cur = await conn.execute(
        f"""UPDATE api_keys SET status = 'revoked', revoked_at = now(), grace_expires_at = %s, rotated_to_id = %s
             WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}""",
        (grace_until, successor_id, tenant_id, key_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(key_id)
    return _key(row)


async def tenant_key_hashes(conn: Conn, tenant_id: str) -> list[str]:
    """Every key hash of a tenant (to purge auth caches when the tenant changes)."""
    cur = await conn.execute("SELECT key_hash FROM api_keys WHERE tenant_id = %s", (tenant_id,))
    return [r["key_hash"] for r in await cur.fetchall()]


async def expire_due_keys(conn: Conn, now: datetime) -> int:
    """Keys past ``expires_at`` show as ``expired`` (authentication refuses them already)."""
    cur = await conn.execute(
        "UPDATE api_keys SET status = 'expired' WHERE status = 'active' AND expires_at <= %s", (now,)
    )
    return cur.rowcount
