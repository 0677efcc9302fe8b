"""The one keyset page query behind every newest-first admin list (keys, tenants, audit).

Rows are ordered by ``(created_at, id)`` descending; the next page starts strictly
before the previous page's last row, so inserts between pages neither repeat nor
skip a row (an OFFSET would).  ``where``/``params`` are the caller's filters, as SQL
fragments with ``%s`` placeholders; table and column names are constants of the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import DictRow

from relay_server.storage.postgres.pool import Conn


async def newest_first(
    conn: Conn,
    *,
    table: str,
    columns: str,
    where: Sequence[str],
    params: Sequence[Any],
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[DictRow]:
    clauses, values = [*where], [*params]
    if after is not None:
        clauses.append("(created_at, id) < (%s, %s)")
        values.extend(after)
    condition = " AND ".join(clauses) or "true"
    cur = await conn.execute(
        f"SELECT {columns} FROM {table} WHERE {condition} ORDER BY created_at DESC, id DESC LIMIT %s",  # noqa: S608 - constants
        (*values, limit),
    )
    return await cur.fetchall()
