"""Stored responses and their input items (``responses``, ``response_input_items``, migration 0019).

Every function takes a connection inside ``tenant_tx`` (row-level security confines it to one
tenant) except ``delete_expired``, the retention sweep, which runs on the owner connection.
Expired rows (``expires_at`` past) are invisible to every read before the sweep removes them.
A key bound to an end user sees only that end user's responses (``end_user_id`` filter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Conn

_LIVE = "expires_at > now() AND (%(end_user)s::text IS NULL OR end_user_id = %(end_user)s)"
# The chain a response continues, newest first (bounded: a loop or a very deep chain stops).
_CHAIN = f"""
WITH RECURSIVE chain (id, previous_response_id, body, depth) AS (
    SELECT id, previous_response_id, body, 0 FROM responses WHERE id = %(id)s AND {_LIVE}
    UNION ALL
    SELECT r.id, r.previous_response_id, r.body, c.depth + 1
      FROM responses r JOIN chain c ON r.id = c.previous_response_id
     WHERE c.depth < %(max_depth)s AND r.expires_at > now()
)
SELECT c.id, c.previous_response_id, c.body,
       COALESCE((SELECT jsonb_agg(i.item ORDER BY i.position) FROM response_input_items i WHERE i.response_id = c.id),
                '[]'::jsonb) AS input
  FROM chain c ORDER BY c.depth DESC
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    status: str
    background: bool
    body: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Turn:
    """One stored turn of a conversation: its input items and its response (with output)."""

    id: str
    previous_response_id: str | None
    input: list[dict[str, Any]]
    body: dict[str, Any]


async def insert(
    conn: Conn,
    *,
    tenant_id: str,
    api_key_id: str | None,
    end_user_id: str | None,
    body: Mapping[str, Any],
    input_items: Sequence[Mapping[str, Any]],
    request_id: str | None,
    retention: timedelta,
) -> None:
    await conn.execute(
        "INSERT INTO responses (id, tenant_id, api_key_id, end_user_id, previous_response_id, model, status, background,"
        " body, request_id, completed_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END, now() + %s)",
        (
            body["id"], tenant_id, api_key_id, end_user_id, body.get("previous_response_id"), body["model"],
            body["status"], bool(body.get("background")), Jsonb(dict(body)), request_id,
            body["status"] in ("completed", "incomplete", "failed", "cancelled"), retention,
        ),
    )  # fmt: skip
    if input_items:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO response_input_items (tenant_id, response_id, position, id, item) VALUES (%s, %s, %s, %s, %s)",
                [(tenant_id, body["id"], i, str(item.get("id") or ""), Jsonb(dict(item))) for i, item in enumerate(input_items)],
            )


async def finish(conn: Conn, body: Mapping[str, Any], *, request_id: str | None = None) -> bool:
    """Write a background response's outcome, unless it was cancelled meanwhile (False then)."""
    cur = await conn.execute(
        "UPDATE responses SET status = %s, body = %s, completed_at = now(), request_id = COALESCE(%s, request_id)"
        " WHERE id = %s AND status IN ('queued', 'in_progress')",
        (body["status"], Jsonb(dict(body)), request_id, body["id"]),
    )
    return cur.rowcount == 1


async def start(conn: Conn, response_id: str) -> bool:
    """A queued background response began running (False: cancelled or deleted meanwhile)."""
    cur = await conn.execute(
        "UPDATE responses SET status = 'in_progress', body = jsonb_set(body, '{status}', '\"in_progress\"')"
        " WHERE id = %s AND status = 'queued'",
        (response_id,),
    )
    return cur.rowcount == 1


async def get(conn: Conn, response_id: str, end_user_id: str | None) -> StoredResponse | None:
    cur = await conn.execute(
        f"SELECT id, status, background, body, created_at FROM responses WHERE id = %(id)s AND {_LIVE}",
        {"id": response_id, "end_user": end_user_id},
    )
    row = await cur.fetchone()
    return StoredResponse(**row) if row else None


async def cancel(conn: Conn, response_id: str, body: Mapping[str, Any]) -> bool:
    """Mark a queued or running background response cancelled (False: it had already ended)."""
    cur = await conn.execute(
        "UPDATE responses SET status = 'cancelled', body = %s, completed_at = now()"
        " WHERE id = %s AND background AND status IN ('queued', 'in_progress')",
        (Jsonb(dict(body)), response_id),
    )
    return cur.rowcount == 1


async def delete(conn: Conn, response_id: str, end_user_id: str | None) -> bool:
    cur = await conn.execute(
        f"DELETE FROM responses WHERE id = %(id)s AND {_LIVE}", {"id": response_id, "end_user": end_user_id}
    )
    return cur.rowcount == 1


async def chain(conn: Conn, response_id: str, end_user_id: str | None, *, max_depth: int = 1000) -> list[Turn]:
    """The conversation ending with ``response_id``, oldest turn first (empty: not found)."""
    cur = await conn.execute(_CHAIN, {"id": response_id, "end_user": end_user_id, "max_depth": max_depth})
    return [Turn(r["id"], r["previous_response_id"], list(r["input"]), r["body"]) for r in await cur.fetchall()]


async def input_items(
    conn: Conn, response_id: str, *, after: str | None, limit: int, descending: bool
) -> list[dict[str, Any]]:
    """One page of a response's input items; ``after`` is an item id (the cursor)."""
    order = "DESC" if descending else "ASC"
    compare = "<" if descending else ">"
    cur = await conn.execute(
        f"SELECT item FROM response_input_items WHERE response_id = %(id)s"
        f" AND (%(after)s::text IS NULL OR position {compare} (SELECT position FROM response_input_items"
        f"      WHERE response_id = %(id)s AND id = %(after)s LIMIT 1))"
        f" ORDER BY position {order} LIMIT %(limit)s",
        {"id": response_id, "after": after, "limit": limit},
    )
    return [r["item"] for r in await cur.fetchall()]


async def delete_expired(conn: Conn, *, batch: int = 1000) -> int:
    """The retention sweep (owner connection): remove up to ``batch`` expired responses."""
    cur = await conn.execute(
        "DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE expires_at <= now() LIMIT %s)", (batch,)
    )
    return cur.rowcount
