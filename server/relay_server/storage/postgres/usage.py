"""Usage: the daily rollup, the spend ledger behind cap seeding, and the
queries behind the usage API.

The rollup recomputes whole (tenant, UTC day, environment) buckets from
``requests`` and upserts ``usage_daily`` — idempotent, so a bucket can be
recomputed any number of times.  Which buckets: the marks the request-log
writer leaves in ``usage_rollup_pending`` (see migration 0014 for why no mark
is ever missed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import sql

from relay_server.domain.usage import UsageFilter
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.storage.postgres.silos import DataPlane, Slice

_RECOMPUTE = """
INSERT INTO usage_daily AS u (
    tenant_id, date, model_id, environment, api_key_id, end_user_id, request_count, input_tokens, output_tokens,
    total_tokens, cache_read_tokens, cache_write_tokens, total_cost, relay_revenue, cost_micros, cache_hits,
    error_count, latency_ms_total, avg_latency_ms, updated_at)
SELECT tenant_id, %(date)s, model_id, environment, api_key_id, max(end_user_id), count(*),
       coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(total_tokens), 0),
       coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0),
       coalesce(sum(total_cost), 0), coalesce(sum(relay_revenue), 0), coalesce(sum(cost_micros), 0),
       count(*) FILTER (WHERE cache_hit), count(*) FILTER (WHERE status IN ('error', 'timeout')),
       coalesce(sum(latency_ms), 0), (coalesce(sum(latency_ms), 0) / count(*))::int, now()
  FROM requests
 WHERE tenant_id = %(tenant)s AND environment = %(env)s AND model_id IS NOT NULL
   AND created_at >= %(lo)s AND created_at < %(hi)s
   -- A day of a month archived for this tenant keeps its totals: its rows left Postgres, and a
   -- late row (landing in requests_default) must not replace the day's sums with its own.
   AND NOT EXISTS (SELECT 1 FROM request_archive_files f
                    WHERE f.tenant_id = %(tenant)s AND f.month = date_trunc('month', %(date)s::date)::date)
 GROUP BY tenant_id, model_id, environment, api_key_id
ON CONFLICT (tenant_id, date, model_id, environment, api_key_id) DO UPDATE SET
    end_user_id = EXCLUDED.end_user_id, request_count = EXCLUDED.request_count,
    input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
    total_tokens = EXCLUDED.total_tokens, cache_read_tokens = EXCLUDED.cache_read_tokens,
    cache_write_tokens = EXCLUDED.cache_write_tokens, total_cost = EXCLUDED.total_cost,
    relay_revenue = EXCLUDED.relay_revenue, cost_micros = EXCLUDED.cost_micros, cache_hits = EXCLUDED.cache_hits,
    error_count = EXCLUDED.error_count, latency_ms_total = EXCLUDED.latency_ms_total,
    avg_latency_ms = EXCLUDED.avg_latency_ms, updated_at = EXCLUDED.updated_at
WHERE (u.request_count, u.cost_micros, u.total_tokens, u.error_count, u.latency_ms_total)
      IS DISTINCT FROM (EXCLUDED.request_count, EXCLUDED.cost_micros, EXCLUDED.total_tokens,
                        EXCLUDED.error_count, EXCLUDED.latency_ms_total)
"""

# The day's per-model sums, rewritten whole from the day's usage_daily rows just recomputed
# (a few thousand rows at most: one per key and model), so they match usage_daily exactly.
_MODEL_DAY_DELETE = """
DELETE FROM usage_daily_model WHERE tenant_id = %(tenant)s AND environment = %(env)s AND date = %(date)s
"""
_MODEL_DAY_INSERT = """
INSERT INTO usage_daily_model (tenant_id, environment, date, model_id, request_count, input_tokens, output_tokens,
                               total_tokens, cache_read_tokens, cache_write_tokens, total_cost, relay_revenue,
                               cost_micros, cache_hits, error_count)
SELECT tenant_id, environment, date, model_id, sum(request_count), sum(input_tokens), sum(output_tokens),
       sum(total_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(total_cost), sum(relay_revenue),
       sum(cost_micros), sum(cache_hits), sum(error_count)
  FROM usage_daily
 WHERE tenant_id = %(tenant)s AND environment = %(env)s AND date = %(date)s
 GROUP BY tenant_id, environment, date, model_id
"""

# ``only`` / ``exclude``: the tenants this database is authoritative for (storage/postgres/silos.py).
# A silo holds replicated rows of a tenant still moving in, and the pool the rows of one that moved
# out: neither is recomputed there, or two workers would write the same buckets in two databases.

_CLAIM = """
SELECT tenant_id, date, environment FROM usage_rollup_pending
 WHERE (%(only)s::text[] IS NULL OR tenant_id = ANY(%(only)s)) AND NOT (tenant_id = ANY(%(exclude)s))
 ORDER BY marked_at LIMIT 1 FOR UPDATE SKIP LOCKED
"""


def day_bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime.combine(day, time.min, tzinfo=UTC)
    return lo, lo + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Bucket:
    tenant_id: str
    date: date
    environment: str


class UsageRollupStore:
    def __init__(self, db: Database | DataPlane) -> None:
        self._plane = DataPlane.of(db)

    async def recompute(self, conn: Conn, bucket: Bucket) -> None:
        lo, hi = day_bounds(bucket.date)
        params = {"date": bucket.date, "tenant": bucket.tenant_id, "env": bucket.environment, "lo": lo, "hi": hi}
        await conn.execute(_RECOMPUTE, params)
        await conn.execute(_MODEL_DAY_DELETE, params)
        await conn.execute(_MODEL_DAY_INSERT, params)

    async def run_pending(self, max_buckets: int = 100) -> list[Bucket]:
        """Claim and recompute marked buckets, one transaction each; safe with many workers."""
        done: list[Bucket] = []
        for part in await self._plane.slices():
            if part.only is not None and not part.only:
                continue  # a silo nobody lives in yet (perhaps not even migrated)
            done += await self._run_slice(part, max_buckets - len(done))
        return done

    async def _run_slice(self, part: Slice, max_buckets: int) -> list[Bucket]:
        done: list[Bucket] = []
        scope = {"only": list(part.only) if part.only is not None else None, "exclude": list(part.exclude)}
        for _ in range(max_buckets):
            async with part.db.system_tx() as conn:
                row = await (await conn.execute(_CLAIM, scope)).fetchone()
                if row is None:
                    break
                bucket = Bucket(row["tenant_id"], row["date"], row["environment"])
                await self.recompute(conn, bucket)
                await conn.execute(
                    "DELETE FROM usage_rollup_pending WHERE tenant_id = %s AND date = %s AND environment = %s",
                    (bucket.tenant_id, bucket.date, bucket.environment),
                )
            done.append(bucket)
        return done


class PostgresSpendLedger:
    """What was billed in a window, from the request log (the truth behind Redis' cap windows)."""

    def __init__(self, db: Database | DataPlane, *, timeout_s: float = 2.0) -> None:
        self._plane = DataPlane.of(db)
        self._timeout = timeout_s

    async def spent_micros(
        self, tenant_id: str, *, key_id: str | None, environment: str | None, start: datetime | None, end: datetime | None
    ) -> int:
        where: list[sql.Composable] = [sql.SQL("tenant_id = %s")]
        params: list[Any] = [tenant_id]
        for column, op, value in (("api_key_id", "=", key_id), ("environment", "=", environment),
                                  ("created_at", ">=", start), ("created_at", "<", end)):  # fmt: skip
            if value is not None:
                where.append(sql.SQL("{} " + op + " %s").format(sql.Identifier(column)))
                params.append(value)
        query = sql.SQL("SELECT coalesce(sum(cost_micros), 0) AS spent FROM requests WHERE {}").format(
            sql.SQL(" AND ").join(where)
        )
        db = await self._plane.database_for(tenant_id)
        async with db.system.connection(timeout=self._timeout) as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return int(row["spent"]) if row else 0


# --- usage API ---------------------------------------------------------------------

GROUP_COLUMNS = {
    "day": sql.SQL("to_char(date, 'YYYY-MM-DD')"),
    "model": sql.SQL("model_id"),
    "api_key": sql.SQL("api_key_id"),
    "end_user": sql.SQL("coalesce(end_user_id, '')"),
}

_SUMS = sql.SQL(
    "count(*) AS buckets, coalesce(sum(request_count), 0) AS request_count, "
    "coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens, "
    "coalesce(sum(total_tokens), 0) AS total_tokens, coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens, "
    "coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens, coalesce(sum(cache_hits), 0) AS cache_hits, "
    "coalesce(sum(error_count), 0) AS error_count, coalesce(sum(total_cost), 0) AS provider_cost, "
    "coalesce(sum(relay_revenue), 0) AS relay_revenue, coalesce(sum(cost_micros), 0) AS cost_micros"
)


class UsageQueries:
    """Reads for the usage API, inside the tenant's RLS-scoped transaction.

    ``cold`` (storage/archive/cold.py) serves the request log of archived
    months; the usage totals read ``usage_daily``, which is never archived.
    """

    def __init__(self, db: Database | DataPlane, cold: Any = None) -> None:
        self._plane = DataPlane.of(db)
        self._db = self._plane.pool  # the control plane: API keys
        self._cold = cold

    async def usage(
        self, tenant_id: str, f: UsageFilter, group_by: str | None, max_groups: int = 0
    ) -> list[dict[str, Any]]:
        """Rows grouped by ``group_by`` (a key of GROUP_COLUMNS), or one total row for None.

        ``max_groups``: only the busiest that many (most requests first); every row then carries
        ``group_count``, the number of groups before the cut.  Returning 31 of 10k key groups is
        what keeps a big tenant's by-key chart cheap: the rows, not the sums, cost the time.
        """
        where: list[sql.Composable] = [sql.SQL("date >= %s AND date <= %s AND environment = %s")]
        params: list[Any] = [f.start, f.end, f.environment]
        for column, value in (("api_key_id", f.api_key_id), ("model_id", f.model_id), ("end_user_id", f.end_user_id)):
            if value:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        group = GROUP_COLUMNS[group_by] if group_by else sql.SQL("''")
        # Without a key or end-user dimension the per-model day sums answer the same question from
        # a few rows a day instead of one per key (300k a month for a tenant with 10k keys).
        by_key = group_by in ("api_key", "end_user") or f.api_key_id or f.end_user_id
        table = sql.Identifier("usage_daily" if by_key else "usage_daily_model")
        w = sql.SQL(" AND ").join(where)
        query = sql.SQL("SELECT {g} AS grp, {sums} FROM {t} WHERE {w} GROUP BY 1 ORDER BY 1")
        async with self._plane.tenant_tx(tenant_id) as conn:
            if max_groups <= 0:
                return list(await (await conn.execute(query.format(g=group, sums=_SUMS, t=table, w=w), params)).fetchall())
            # Two steps: rank the groups by one integer sum (cheap), then take every sum — the
            # NUMERIC money sums are what cost — for the chosen few only (an index range each).
            rank = sql.SQL(
                "SELECT {g} AS grp, count(*) OVER () AS group_count FROM {t} WHERE {w} "
                "GROUP BY 1 ORDER BY sum(request_count) DESC, 1 LIMIT {n}"
            ).format(g=group, t=table, w=w, n=sql.Literal(max_groups))
            top = list(await (await conn.execute(rank, params)).fetchall())
            if not top:
                return []
            chosen = sql.SQL(" AND ").join([w, sql.SQL("{g} = ANY(%s)").format(g=group)])
            rows = await (
                await conn.execute(query.format(g=group, sums=_SUMS, t=table, w=chosen), [*params, [r["grp"] for r in top]])
            ).fetchall()
        count = int(top[0]["group_count"])
        return sorted(({**r, "group_count": count} for r in rows), key=lambda r: (-int(r["request_count"]), r["grp"]))

    async def key_exists(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        async with self._db.tenant_tx(tenant_id) as conn:
            return await (
                await conn.execute(
                    "SELECT id, environment, spend_cap_micros, spend_cap_window FROM api_keys WHERE id = %s", (key_id,)
                )
            ).fetchone()

    async def requests(
        self, tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None, limit: int,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
        where: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        for column, value in filters.items():
            if value:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if start is not None:
            where.append(sql.SQL("created_at >= %s"))
            params.append(start)
        if end is not None:
            where.append(sql.SQL("created_at < %s"))
            params.append(end)
        if after is not None:
            where.append(sql.SQL("(created_at, id) < (%s, %s)"))
            params += [after[0], after[1]]
        query = sql.SQL("SELECT * FROM requests WHERE {} ORDER BY created_at DESC, id DESC LIMIT %s").format(
            sql.SQL(" AND ").join(where)
        )
        async with self._plane.tenant_tx(tenant_id) as conn:
            hot = list(await (await conn.execute(query, [*params, limit])).fetchall())
        if self._cold is None:
            return hot
        # Archived months are no longer in Postgres (and hot ones not yet in a read file): merge the two pages.
        # A full hot page bounds what an archived row could add: only rows at or after its last one.
        floor = start
        if len(hot) >= limit:
            floor = hot[-1]["created_at"] if start is None else max(start, hot[-1]["created_at"])
        cold = await self._cold.requests(tenant_id, filters, floor, end, after, limit)
        if not cold:
            return hot
        return sorted(hot + cold, key=lambda r: (r["created_at"], r["id"]), reverse=True)[:limit]


