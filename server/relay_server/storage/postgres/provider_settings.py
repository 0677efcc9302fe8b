"""A provider's operator settings as the admin API changes them: name,
base_url, priority, region and status.

Runs in the caller's transaction (the admin call's, which also writes the
audit row).  ``providers`` is global (no tenant): the system pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql

from relay_server.storage.postgres.pool import Conn
from relay_server.storage.postgres.providers import ProviderRow

# The columns an operator changes; id and api (which translator speaks to it) never do.
COLUMNS = ("name", "base_url", "priority", "region", "status")


async def find(conn: Conn, provider_id: str, *, lock: bool = False) -> ProviderRow | None:
    query = "SELECT id, name, api, base_url, status, priority, region FROM providers WHERE id = %s"
    row = await (await conn.execute(query + (" FOR UPDATE" if lock else ""), (provider_id,))).fetchone()
    return ProviderRow(**row) if row is not None else None


async def update(conn: Conn, provider_id: str, values: Mapping[str, Any]) -> None:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column)) for column in values if column in COLUMNS
    )
    await conn.execute(sql.SQL("UPDATE providers SET {} WHERE id = %(id)s").format(assignments), {**values, "id": provider_id})
