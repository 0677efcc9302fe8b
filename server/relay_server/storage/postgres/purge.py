"""Hard deletion of a tenant: every row of it, in dependency order.

The order is computed from the catalogue, not written down: every table with
a tenant column (``tenants`` itself uses ``id``) plus the tables without one
whose foreign keys point into those (``provider_health_events`` →
``provider_credentials``).  Children are deleted before their parents, so a
table added by a later migration is covered without touching this module,
and a reference cycle is reported instead of half-deleting.  Runs as the
owner (system pool): RLS would hide nothing here and ``relay_app`` may not
delete tenants.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from relay_server.storage.postgres.pool import Conn

_TENANT_TABLES = """
SELECT c.relname AS name, CASE WHEN c.relname = 'tenants' THEN 'id' ELSE 'tenant_id' END AS col
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND (c.relname = 'tenants' OR EXISTS (
        SELECT 1 FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
"""

# Foreign keys between top-level tables (constraints cloned onto partitions
# have a parent constraint and are skipped).
_FOREIGN_KEYS = """
SELECT ch.relname AS child, pa.relname AS parent,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k (num, ord)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord) AS child_cols,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k (num, ord)
               JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord) AS parent_cols
  FROM pg_constraint con
  JOIN pg_class ch ON ch.oid = con.conrelid
  JOIN pg_class pa ON pa.oid = con.confrelid
  JOIN pg_namespace n ON n.oid = con.connamespace
 WHERE con.contype = 'f' AND n.nspname = 'public' AND con.conparentid = 0 AND NOT ch.relispartition
"""


@dataclass(frozen=True, slots=True)
class DeleteStep:
    table: str
    statement: sql.Composed


class DependencyCycle(RuntimeError):
    """Tables reference each other in a cycle: no safe deletion order exists."""


async def deletion_plan(conn: Conn) -> list[DeleteStep]:
    """One DELETE per table, children first; each takes the tenant id as its only parameter."""
    tenant_cols = {r["name"]: r["col"] for r in await (await conn.execute(_TENANT_TABLES)).fetchall()}
    fks = await (await conn.execute(_FOREIGN_KEYS)).fetchall()
    statements: dict[str, sql.Composed] = {
        table: sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(col))
        for table, col in tenant_cols.items()
    }
    # Tables without a tenant column whose rows hang off tenant rows.
    for fk in fks:
        child, parent = fk["child"], fk["parent"]
        if child in tenant_cols or parent not in tenant_cols:
            continue
        if child in statements:
            raise DependencyCycle(f"{child} references more than one tenant table; extend purge.py")
        statements[child] = sql.SQL("DELETE FROM {c} WHERE ({cc}) IN (SELECT {pc} FROM {p} WHERE {tc} = %s)").format(
            c=sql.Identifier(child),
            cc=sql.SQL(", ").join(map(sql.Identifier, fk["child_cols"])),
            pc=sql.SQL(", ").join(map(sql.Identifier, fk["parent_cols"])),
            p=sql.Identifier(parent),
            tc=sql.Identifier(tenant_cols[parent]),
        )
    # child → the parents it references (self-references are fine in one statement).
    parents: dict[str, set[str]] = {t: set() for t in statements}
    for fk in fks:
        if fk["child"] in statements and fk["parent"] in statements and fk["child"] != fk["parent"]:
            parents[fk["child"]].add(fk["parent"])
    order: list[str] = []
    remaining = set(statements)
    while remaining:
        # A table can go once nothing left still references it.
        ready = sorted(t for t in remaining if not any(t in parents[c] for c in remaining if c != t))
        if not ready:
            raise DependencyCycle(f"reference cycle among {sorted(remaining)}")
        order.extend(ready)
        remaining -= set(ready)
    return [DeleteStep(t, statements[t]) for t in order]


async def hard_delete_tenant(conn: Conn, tenant_id: str) -> dict[str, int]:
    """Delete every row of ``tenant_id`` in this transaction; table → rows deleted."""
    counts: dict[str, int] = {}
    for step in await deletion_plan(conn):
        cur = await conn.execute(step.statement, (tenant_id,))
        counts[step.table] = cur.rowcount
    # The job queue keeps the tenant in its job arguments, not in a column.
    cur = await conn.execute(
        "DELETE FROM procrastinate_jobs WHERE args ->> 'tenant_id' = %s AND status <> 'doing'", (tenant_id,)
    )
    counts["procrastinate_jobs"] = cur.rowcount
    return counts
