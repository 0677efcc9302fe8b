"""The SQL of a tenant's move to a silo: Postgres logical replication of its
data-plane rows (``silos.DATA_PLANE_TABLES``), filtered to the tenant.

* Publisher (the pool): two publications with the row filter
  ``tenant_id = '<tenant>'`` (Postgres 15+).  ``requests`` is append-only and
  partitioned: its publication carries inserts only, through the partition
  root; the other tables carry every change, so their replica identity must
  cover ``tenant_id`` (usage tables: their primary key does; billing tables:
  ``REPLICA IDENTITY FULL``, set here).
* A logical slot made beforehand: ``CREATE SUBSCRIPTION`` cannot create its
  slot when the silo lives on the same Postgres server (the command would
  wait for its own transaction).
* Subscriber (the silo): the subscription copies the existing rows, then
  streams.  The silo's data-plane tables lose their foreign keys to the
  control plane, which stays in the pool (a silo has no ``tenants`` or
  ``api_keys`` rows to point at).

Every function is idempotent, so an interrupted move is resumed by running it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql

from relay_server.storage.postgres.silos import DATA_PLANE_TABLES

# Replicated with every operation; ``requests`` goes alone, inserts only.
_CHANGING = tuple(t for t in DATA_PLANE_TABLES if t != "requests")
_FULL_IDENTITY = ("billing_periods", "billing_line_items")  # primary key without tenant_id


@dataclass(frozen=True, slots=True)
class Names:
    publication: str  # every operation
    log_publication: str  # requests, inserts only
    slot: str
    subscription: str

    @classmethod
    def for_tenant(cls, tenant_id: str) -> Names:
        safe = re.sub(r"[^a-z0-9_]", "_", tenant_id.lower())[:40]
        base = f"relay_silo_{safe}"
        return cls(base, f"{base}_log", base, base)


@dataclass(frozen=True, slots=True)
class TableSum:
    rows: int
    checksum: str  # order-independent: the sum of 60 bits of each row's md5


async def _one(conn: AsyncConnection[Any], query: Any, params: Any = None) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    return None if row is None else (row[0] if isinstance(row, tuple) else next(iter(row.values())))


def _filter(tenant_id: str) -> sql.Composable:
    return sql.SQL("WHERE (tenant_id = {})").format(sql.Literal(tenant_id))


async def ensure_publications(conn: AsyncConnection[Any], names: Names, tenant_id: str) -> None:
    """On the pool (the tables' owner), autocommit."""
    for table in _FULL_IDENTITY:
        await conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(table)))
    existing = {
        r[0] if isinstance(r, tuple) else r["pubname"]
        for r in await (
            await conn.execute(
                "SELECT pubname FROM pg_publication WHERE pubname IN (%s, %s)",
                (names.publication, names.log_publication),
            )
        ).fetchall()
    }
    if names.log_publication not in existing:
        await conn.execute(
            sql.SQL(
                "CREATE PUBLICATION {} FOR TABLE requests {} WITH (publish = 'insert', publish_via_partition_root = true)"
            ).format(sql.Identifier(names.log_publication), _filter(tenant_id))
        )
    if names.publication not in existing:
        tables = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(t), _filter(tenant_id)) for t in _CHANGING)
        await conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(names.publication), tables)
        )


async def ensure_slot(conn: AsyncConnection[Any], names: Names) -> None:
    """On the pool, as a role with REPLICATION; after the publications (decoding looks them up)."""
    if await _one(conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (names.slot,)) is None:
        await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (names.slot,))


async def drop_control_plane_references(conn: AsyncConnection[Any]) -> list[str]:
    """On the silo (owner): foreign keys from data-plane tables to tables that stay in the pool."""
    rows = await (
        await conn.execute(
            """SELECT c.conrelid::regclass::text AS tbl, c.conname
                 FROM pg_constraint c
                 JOIN pg_class r ON r.oid = c.conrelid
                WHERE c.contype = 'f' AND c.conparentid = 0
                  AND r.relname = ANY(%s) AND NOT (c.confrelid::regclass::text = ANY(%s))""",
            (list(DATA_PLANE_TABLES), list(DATA_PLANE_TABLES)),
        )
    ).fetchall()
    dropped = []
    for row in rows:
        tbl, con = (row[0], row[1]) if isinstance(row, tuple) else (row["tbl"], row["conname"])
        await conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(tbl), sql.Identifier(con))
        )
        dropped.append(f"{tbl}.{con}")
    return dropped


async def subscription_exists(conn: AsyncConnection[Any], names: Names) -> bool:
    return await _one(conn, "SELECT 1 FROM pg_subscription WHERE subname = %s", (names.subscription,)) is not None


async def delete_tenant_rows(conn: AsyncConnection[Any], tenant_id: str) -> None:
    """Children first.  On the silo before a fresh copy; on the pool after a finished move (optional)."""
    async with conn.transaction():
        for table in reversed(DATA_PLANE_TABLES):
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)), (tenant_id,)
            )


async def create_subscription(conn: AsyncConnection[Any], names: Names, publisher_dsn: str) -> None:
    """On the silo, autocommit, as a role allowed to create subscriptions (superuser or pg_create_subscription)."""
    await conn.execute(
        sql.SQL(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}, {} "
            # run_as_owner: apply as the subscription's (RLS-exempt) owner, not as the tables' owner,
            # whom FORCE ROW LEVEL SECURITY confines (Postgres refuses to replicate into such a table).
            "WITH (create_slot = false, slot_name = {}, copy_data = true, run_as_owner = true)"
        ).format(
            sql.Identifier(names.subscription),
            sql.Literal(publisher_dsn),
            sql.Identifier(names.publication),
            sql.Identifier(names.log_publication),
            sql.Literal(names.slot),
        )
    )


async def initial_copy_done(conn: AsyncConnection[Any], names: Names) -> bool:
    """Every table of the subscription has finished its initial copy (state ``r``eady)."""
    row = await (
        await conn.execute(
            """SELECT count(*) AS n, count(*) FILTER (WHERE r.srsubstate = 'r') AS ready
                 FROM pg_subscription s JOIN pg_subscription_rel r ON r.srsubid = s.oid
                WHERE s.subname = %s""",
            (names.subscription,),
        )
    ).fetchone()
    assert row is not None
    n, ready = row["n"], row["ready"]
    return bool(n) and n == ready


async def slot_lag_bytes(conn: AsyncConnection[Any], names: Names) -> int | None:
    """On the pool: WAL not yet confirmed by the subscriber (None: no such slot)."""
    lag = await _one(
        conn,
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = %s",
        (names.slot,),
    )
    return None if lag is None else int(lag)


async def current_lsn(conn: AsyncConnection[Any]) -> str:
    return str(await _one(conn, "SELECT pg_current_wal_lsn()::text"))


async def slot_confirmed(conn: AsyncConnection[Any], names: Names, lsn: str) -> bool:
    """On the pool: the subscriber has confirmed everything up to ``lsn``."""
    done = await _one(
        conn,
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (lsn, names.slot),
    )
    return bool(done)


async def table_sums(conn: AsyncConnection[Any], tenant_id: str) -> dict[str, TableSum]:
    """Row count and checksum of the tenant's rows in each data-plane table (same on both sides when equal)."""
    out: dict[str, TableSum] = {}
    for table in DATA_PLANE_TABLES:
        row = await (
            await conn.execute(
                sql.SQL(
                    "SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0)::text AS s "
                    "FROM {} t WHERE tenant_id = %s"
                ).format(sql.Identifier(table)),
                (tenant_id,),
            )
        ).fetchone()
        assert row is not None
        n, s = row["n"], row["s"]
        out[table] = TableSum(int(n), str(s))
    return out


async def drop_subscription(conn: AsyncConnection[Any], names: Names) -> None:
    """On the silo, autocommit.  Detached from its slot first: dropping it must not dial the publisher
    (on one server that can wait on itself); the slot is dropped on the pool by ``drop_slot``."""
    if not await subscription_exists(conn, names):
        return
    ident = sql.Identifier(names.subscription)
    await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
    await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
    await conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


async def drop_slot(conn: AsyncConnection[Any], names: Names) -> None:
    """On the pool.  The walsender of a just-disabled subscription may hold the slot a moment: the caller retries."""
    if await _one(conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (names.slot,)) is not None:
        await conn.execute("SELECT pg_drop_replication_slot(%s)", (names.slot,))


async def drop_publications(conn: AsyncConnection[Any], names: Names) -> None:
    for pub in (names.publication, names.log_publication):
        await conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))
