"""Dashboard users of a tenant and its roles (``users``, ``roles``,
``role_permissions``, ``user_roles``).  Every function runs inside the
caller's transaction: ``tenant_tx`` for requests, ``system_tx`` for workers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from relay_server.domain.tenants import MemberRow
from relay_server.ids import new_id
from relay_server.storage.postgres.pool import Conn

_COLUMNS = "id, tenant_id, email, name, role, status, created_at"


def _member(row: Mapping[str, Any]) -> MemberRow:
    return MemberRow(**dict(row))


async def insert_user(
    conn: Conn, *, tenant_id: str, email: str, name: str | None, role: str, user_id: str | None = None
) -> MemberRow:
    """Add a user, or bring back a removed one with the same email.

    A live user with that email raises ``psycopg.errors.UniqueViolation``.
    """
    cur = await conn.execute(
        f"""INSERT INTO users (id, tenant_id, email, name, role, status)
            VALUES (%s, %s, %s, %s, %s, 'active')
            ON CONFLICT (tenant_id, email) DO UPDATE
               SET name = EXCLUDED.name, role = EXCLUDED.role, status = 'active', deleted_at = NULL
             WHERE users.status = 'deleted'
         RETURNING {_COLUMNS}""",
        (user_id or new_id("usr"), tenant_id, email, name, role),
    )
    row = await cur.fetchone()
    if row is None:  # the conflicting user is live: report it as the unique violation it is
        from psycopg.errors import UniqueViolation  # noqa: PLC0415

        raise UniqueViolation(f"a member with email {email!r} exists")
    return _member(row)


async def get_user(conn: Conn, tenant_id: str, user_id: str, *, lock: bool = False) -> MemberRow | None:
    suffix = " FOR UPDATE" if lock else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM users WHERE tenant_id = %s AND id = %s{suffix}", (tenant_id, user_id)
    )
    row = await cur.fetchone()
    return _member(row) if row else None


async def list_users(
    conn: Conn, tenant_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[MemberRow]:
    """Members that are not removed, oldest first."""
    where = "tenant_id = %s AND status <> 'deleted'"
    params: list[Any] = [tenant_id]
    if after is not None:
        where += " AND (created_at, id) > (%s, %s)"
        params.extend(after)
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM users WHERE {where} ORDER BY created_at, id LIMIT %s", (*params, limit)
    )
    return [_member(r) for r in await cur.fetchall()]


async def remove_user(conn: Conn, tenant_id: str, user_id: str) -> MemberRow:
    """Soft-delete a user and take away every role it had."""
    await conn.execute("DELETE FROM user_roles WHERE tenant_id = %s AND user_id = %s", (tenant_id, user_id))
    cur = await conn.execute(
        f"""UPDATE users SET status = 'deleted', deleted_at = now()
             WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}""",
        (tenant_id, user_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(user_id)
    return _member(row)


async def count_active_owners(conn: Conn, tenant_id: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM users WHERE tenant_id = %s AND role = 'owner' AND status = 'active'", (tenant_id,)
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def seed_roles(conn: Conn, tenant_id: str, roles: Mapping[str, Collection[str]]) -> dict[str, str]:
    """Create the system roles and their permissions (idempotent); name → role id."""
    for name in roles:
        await conn.execute(
            """INSERT INTO roles (id, tenant_id, name, is_system) VALUES (%s, %s, %s, true)
               ON CONFLICT (tenant_id, name) DO NOTHING""",
            (new_id("role"), tenant_id, name),
        )
    cur = await conn.execute("SELECT id, name FROM roles WHERE tenant_id = %s", (tenant_id,))
    ids = {r["name"]: r["id"] for r in await cur.fetchall()}
    for name, permissions in roles.items():
        await conn.execute(
            """INSERT INTO role_permissions (tenant_id, role_id, permission_id)
               SELECT %s, %s, p FROM unnest(%s::text[]) AS p
               ON CONFLICT DO NOTHING""",
            (tenant_id, ids[name], sorted(permissions)),
        )
    return ids


async def role_id(conn: Conn, tenant_id: str, name: str) -> str | None:
    cur = await conn.execute("SELECT id FROM roles WHERE tenant_id = %s AND name = %s", (tenant_id, name))
    row = await cur.fetchone()
    return row["id"] if row else None


async def assign_role(conn: Conn, tenant_id: str, user_id: str, role: str) -> None:
    """Give a user exactly one role (the dashboard model: one role per member)."""
    rid = await role_id(conn, tenant_id, role)
    if rid is None:
        raise LookupError(f"role {role!r} does not exist in tenant {tenant_id}")
    await conn.execute("DELETE FROM user_roles WHERE tenant_id = %s AND user_id = %s", (tenant_id, user_id))
    await conn.execute(
        "INSERT INTO user_roles (tenant_id, user_id, role_id) VALUES (%s, %s, %s)", (tenant_id, user_id, rid)
    )


async def role_permissions(conn: Conn, tenant_id: str, role: str) -> frozenset[str]:
    cur = await conn.execute(
        """SELECT rp.permission_id FROM role_permissions rp JOIN roles r ON r.id = rp.role_id
            WHERE r.tenant_id = %s AND r.name = %s""",
        (tenant_id, role),
    )
    return frozenset(r["permission_id"] for r in await cur.fetchall())


async def user_permissions(conn: Conn, tenant_id: str, user_id: str) -> frozenset[str] | None:
    """What an active user may do now; None when the user is gone or disabled."""
    cur = await conn.execute(
        "SELECT status FROM users WHERE tenant_id = %s AND id = %s", (tenant_id, user_id)
    )
    row = await cur.fetchone()
    if row is None or row["status"] != "active":
        return None
    cur = await conn.execute(
        """SELECT DISTINCT rp.permission_id FROM user_roles ur
             JOIN role_permissions rp ON rp.role_id = ur.role_id AND rp.tenant_id = ur.tenant_id
            WHERE ur.tenant_id = %s AND ur.user_id = %s""",
        (tenant_id, user_id),
    )
    return frozenset(r["permission_id"] for r in await cur.fetchall())


async def set_role(conn: Conn, tenant_id: str, user_id: str, role: str) -> MemberRow:
    """Give an existing user another role (``users.role`` and its one ``user_roles`` row)."""
    await assign_role(conn, tenant_id, user_id, role)
    cur = await conn.execute(
        f"UPDATE users SET role = %s WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}", (role, tenant_id, user_id)
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(user_id)
    return _member(row)


async def memberships_by_email(conn: Conn, email: str) -> list[dict[str, Any]]:
    """Every tenant (not deleted) where this email is an active member, with its permissions now.

    Crosses tenants: only for ``system_tx`` (the platform's own sign-in lookup).
    """
    cur = await conn.execute(
        """SELECT u.id AS user_id, t.id AS tenant_id, t.slug, t.name, t.status, u.role,
                  coalesce(array_agg(DISTINCT rp.permission_id)
                           FILTER (WHERE rp.permission_id IS NOT NULL), '{}') AS permissions
             FROM users u
             JOIN tenants t ON t.id = u.tenant_id AND t.status <> 'deleted'
             LEFT JOIN user_roles ur ON ur.user_id = u.id AND ur.tenant_id = u.tenant_id
             LEFT JOIN role_permissions rp ON rp.role_id = ur.role_id AND rp.tenant_id = ur.tenant_id
            WHERE lower(u.email) = %s AND u.status = 'active'
            GROUP BY u.id, t.id ORDER BY t.name, t.id""",
        (email.strip().lower(),),
    )
    return [dict(r) for r in await cur.fetchall()]
