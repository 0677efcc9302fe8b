"""Postgres side of request archival: which monthly partitions are due, their
per-tenant counts and checksums, the manifest (``request_archive_files``), and
the detach / drop of a partition.  Runs as the owner (system pool)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import sql

from relay_server.storage.postgres.pool import Conn

ARCHIVE_LOCK = 0x52454C4141  # "RELAA": one archiver run (or tenant erasure) at a time across nodes
_NAME = re.compile(r"^requests_y(\d{4})m(\d{2})$")

# Per tenant of one partition: what storage/archive/parquet.py's Checksum computes from a file
# (ids sort by byte, COLLATE "C", as Python sorts str).
PG_CHECKSUM = (
    "SELECT tenant_id, count(*) AS row_count, "
    "md5(coalesce(string_agg(id || ':' || coalesce(cost_micros::text, '') || ',', '' ORDER BY id COLLATE \"C\", cost_micros), '')) "
    "AS checksum FROM {table} GROUP BY tenant_id"
)


_PARTITIONS = r"""
SELECT c.relname AS name, c.relispartition AS attached
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname ~ '^requests_y\d{4}m\d{2}$'
"""


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    month: date
    exists: bool  # the table is still there (attached or detached)
    attached: bool


@dataclass(frozen=True, slots=True)
class TenantSlice:
    """One tenant's rows in one partition, as Postgres counts them."""

    tenant_id: str
    row_count: int
    checksum: str


def partition_month(name: str) -> date | None:
    m = _NAME.match(name)
    return date(int(m.group(1)), int(m.group(2)), 1) if m else None


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


async def partitions(conn: Conn) -> list[Partition]:
    """Every monthly request table, plus partitions the manifest says were detached but not yet marked dropped."""
    found: dict[str, Partition] = {}
    for row in await (await conn.execute(_PARTITIONS)).fetchall():
        month = partition_month(row["name"])
        if month is not None:
            found[row["name"]] = Partition(row["name"], month, True, row["attached"])
    pending = await conn.execute("SELECT DISTINCT partition_name, month FROM request_archive_files WHERE state = 'detached'")
    for row in await pending.fetchall():
        found.setdefault(row["partition_name"], Partition(row["partition_name"], row["month"], False, False))
    return sorted(found.values(), key=lambda p: p.month)


async def slices(conn: Conn, table: str) -> dict[str, TenantSlice]:
    query = sql.SQL(PG_CHECKSUM).format(table=sql.Identifier(table))
    return {
        r["tenant_id"]: TenantSlice(r["tenant_id"], int(r["row_count"]), r["checksum"])
        for r in await (await conn.execute(query)).fetchall()
    }


async def stream_rows(conn: Conn, table: str, tenant_id: str, batch_rows: int) -> AsyncIterator[list[dict[str, Any]]]:
    """The tenant's rows of ``table`` in batches, through a server-side cursor (bounded memory)."""
    query = sql.SQL("SELECT * FROM {} WHERE tenant_id = %s ORDER BY created_at, id").format(sql.Identifier(table))
    async with conn.transaction():
        async with conn.cursor(name=f"archive_{table}") as cur:
            await cur.execute(query, (tenant_id,))
            while rows := await cur.fetchmany(batch_rows):
                yield rows


async def columns(conn: Conn, table: str) -> list[str]:
    rows = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,)
    )
    return [r["attname"] for r in await rows.fetchall()]


async def manifest(conn: Conn, partition: str) -> dict[str, dict[str, Any]]:
    rows = await conn.execute("SELECT * FROM request_archive_files WHERE partition_name = %s", (partition,))
    return {r["tenant_id"]: r for r in await rows.fetchall()}


async def record(conn: Conn, partition: Partition, s: TenantSlice, path: str, size: int, sha256: str) -> None:
    await conn.execute(
        """
        INSERT INTO request_archive_files (partition_name, month, tenant_id, path, row_count, bytes, checksum, file_sha256, state)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'verified')
        ON CONFLICT (partition_name, tenant_id) DO UPDATE SET path = EXCLUDED.path, row_count = EXCLUDED.row_count,
            bytes = EXCLUDED.bytes, checksum = EXCLUDED.checksum, file_sha256 = EXCLUDED.file_sha256,
            state = 'verified', updated_at = now()
        """,
        (partition.name, partition.month, s.tenant_id, path, s.row_count, size, s.checksum, sha256),
    )


async def forget(conn: Conn, partition: str, tenant_id: str) -> None:
    await conn.execute(
        "DELETE FROM request_archive_files WHERE partition_name = %s AND tenant_id = %s", (partition, tenant_id)
    )


async def detach(conn: Conn, partition: str) -> None:
    """Detach and mark ``detached`` in the caller's transaction (rows leave Postgres' view and enter the files' at once)."""
    await conn.execute(sql.SQL("ALTER TABLE requests DETACH PARTITION {}").format(sql.Identifier(partition)))
    await conn.execute(
        "UPDATE request_archive_files SET state = 'detached', updated_at = now() WHERE partition_name = %s", (partition,)
    )


async def drop(conn: Conn, partition: str) -> None:
    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(partition)))
    await conn.execute(
        "UPDATE request_archive_files SET state = 'archived', updated_at = now() WHERE partition_name = %s", (partition,)
    )


async def cold_files(conn: Conn, tenant_id: str, start: datetime | None, end: datetime | None) -> list[tuple[date, str]]:
    """(month, path) of ``tenant_id``'s files Postgres no longer serves, for months overlapping [start, end), newest first."""
    where = ["tenant_id = %s", "state IN ('detached', 'archived')"]
    params: list[Any] = [tenant_id]
    if start is not None:  # the month ends after start
        where.append("month > (%s AT TIME ZONE 'UTC')::date - interval '1 month'")
        params.append(start)
    if end is not None:  # the month begins before end
        where.append("month < %s AT TIME ZONE 'UTC'")
        params.append(end)
    rows = await conn.execute(f"SELECT month, path FROM request_archive_files WHERE {' AND '.join(where)} ORDER BY month DESC", params)
    return [(r["month"], r["path"]) for r in await rows.fetchall()]
