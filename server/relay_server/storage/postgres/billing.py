"""Monthly billing periods and their line items, built from ``usage_daily``.

One period per (tenant, environment, UTC month): live periods are invoiced,
test periods are statements of what test traffic would have cost.  Ids are
derived from (tenant, environment, month[, model]) and every write is an
upsert of recomputed values, so running the billing pass any number of times
— in several processes at once (the period row is locked) — leaves the same
rows.  A period is finalized once its month has ended, ``finalize_delay``
has passed (room for spooled request rows to arrive) and no rollup bucket of
that month is still waiting; finalized periods are never changed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from relay_server.storage.postgres.pool import Conn, Database
from relay_server.storage.postgres.silos import DataPlane

_CANDIDATES = """
SELECT u.tenant_id, u.environment, date_trunc('month', u.date)::date AS month
  FROM usage_daily u
  LEFT JOIN billing_periods p
    ON p.tenant_id = u.tenant_id AND p.environment = u.environment
   AND p.period_start = date_trunc('month', u.date)::date
 WHERE u.date >= %s AND (p.id IS NULL OR p.status = 'open')
 GROUP BY 1, 2, 3
 ORDER BY 3, 1, 2
"""

_LINES = """
SELECT model_id, sum(request_count) AS request_count, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(total_cost) AS total_cost, sum(cost_micros) AS cost_micros
  FROM usage_daily
 WHERE tenant_id = %s AND environment = %s AND date >= %s AND date < %s
 GROUP BY model_id
 ORDER BY model_id
"""

_UPSERT_LINE = """
INSERT INTO billing_line_items AS b (id, billing_period_id, tenant_id, model_id, request_count, input_tokens,
                                     output_tokens, total_cost, cost_micros)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (billing_period_id, model_id) DO UPDATE SET
    request_count = EXCLUDED.request_count, input_tokens = EXCLUDED.input_tokens,
    output_tokens = EXCLUDED.output_tokens, total_cost = EXCLUDED.total_cost, cost_micros = EXCLUDED.cost_micros
WHERE (b.request_count, b.input_tokens, b.output_tokens, b.total_cost, b.cost_micros)
      IS DISTINCT FROM (EXCLUDED.request_count, EXCLUDED.input_tokens, EXCLUDED.output_tokens,
                        EXCLUDED.total_cost, EXCLUDED.cost_micros)
"""


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def period_id(tenant_id: str, environment: str, month: date) -> str:
    return f"bp_{tenant_id}_{environment}_{month:%Y%m}"


@dataclass(frozen=True, slots=True)
class PeriodResult:
    period_id: str
    status: str  # open | finalized (or whatever it already was)
    cost_micros: int


class BillingStore:
    def __init__(self, db: Database | DataPlane) -> None:
        self._plane = DataPlane.of(db)

    async def candidates(self, since: date) -> list[tuple[str, str, date]]:
        """(tenant, environment, month) with usage whose period is missing or still open, in every database
        (each taking only the tenants it is authoritative for)."""
        out: list[tuple[str, str, date]] = []
        for part in await self._plane.slices():
            if part.only is not None and not part.only:
                continue  # a silo nobody lives in yet (perhaps not even migrated)
            async with part.db.system.connection() as conn:
                rows = await (await conn.execute(_CANDIDATES, (since,))).fetchall()
            out += [
                (r["tenant_id"], r["environment"], r["month"]) for r in rows
                if (part.only is None or r["tenant_id"] in part.only) and r["tenant_id"] not in part.exclude
            ]  # fmt: skip
        return sorted(out, key=lambda c: (c[2], c[0], c[1]))

    async def reconcile(
        self, tenant_id: str, environment: str, month: date, *, now: datetime, finalize_delay: timedelta
    ) -> PeriodResult:
        start, end = month_start(month), next_month(month)
        pid = period_id(tenant_id, environment, start)
        db = await self._plane.database_for(tenant_id)
        async with db.system_tx() as conn:
            await conn.execute(
                "INSERT INTO billing_periods (id, tenant_id, environment, period_start, period_end) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, environment, period_start) DO NOTHING",
                (pid, tenant_id, environment, start, end),
            )
            period = await (
                await conn.execute(
                    "SELECT id, status, cost_micros FROM billing_periods "
                    "WHERE tenant_id = %s AND environment = %s AND period_start = %s FOR UPDATE",
                    (tenant_id, environment, start),
                )
            ).fetchone()
            assert period is not None
            if period["status"] != "open":
                return PeriodResult(period["id"], period["status"], int(period["cost_micros"] or 0))
            total_micros = await self._write_lines(conn, period["id"], tenant_id, environment, start, end)
            status = "open"
            ended_long_enough = now >= datetime.combine(end, datetime.min.time(), UTC) + finalize_delay
            if ended_long_enough and not await _rollup_pending(conn, tenant_id, environment, start, end):
                await conn.execute(
                    "UPDATE billing_periods SET status = 'finalized', finalized_at = %s WHERE id = %s AND status = 'open'",
                    (now, period["id"]),
                )
                status = "finalized"
        return PeriodResult(period["id"], status, total_micros)

    async def _write_lines(self, conn: Conn, pid: str, tenant_id: str, environment: str, start: date, end: date) -> int:
        lines = await (await conn.execute(_LINES, (tenant_id, environment, start, end))).fetchall()
        for line in lines:
            await conn.execute(
                _UPSERT_LINE,
                (f"bli_{pid[3:]}_{line['model_id']}", pid, tenant_id, line["model_id"], line["request_count"],
                 line["input_tokens"], line["output_tokens"], line["total_cost"], line["cost_micros"]),
            )  # fmt: skip
        await conn.execute(
            "DELETE FROM billing_line_items WHERE billing_period_id = %s AND NOT (model_id = ANY(%s))",
            (pid, [line["model_id"] for line in lines]),
        )
        total_cost = sum((line["total_cost"] for line in lines), start=0)
        total_micros = sum(int(line["cost_micros"]) for line in lines)
        await conn.execute(
            "UPDATE billing_periods SET total_cost = %s, cost_micros = %s WHERE id = %s "
            "AND (total_cost, cost_micros) IS DISTINCT FROM (%s::numeric, %s::bigint)",
            (total_cost, total_micros, pid, total_cost, total_micros),
        )
        return total_micros

    async def periods(
        self, tenant_id: str, environment: str | None, before: tuple[date, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first, with their line items; ``before``: (period_start, environment) of the previous page's last."""
        where: list[str] = ["true"]
        params: list[Any] = []
        if environment:
            where.append("environment = %s")
            params.append(environment)
        if before is not None:
            where.append("(period_start, environment) < (%s, %s)")
            params += [before[0], before[1]]
        async with self._plane.tenant_tx(tenant_id) as conn:
            periods = await (
                await conn.execute(
                    f"SELECT * FROM billing_periods WHERE {' AND '.join(where)} "  # noqa: S608 - fixed fragments only
                    "ORDER BY period_start DESC, environment DESC LIMIT %s",
                    (*params, limit),
                )
            ).fetchall()
            ids = [p["id"] for p in periods]
            lines = await (
                await conn.execute(
                    "SELECT * FROM billing_line_items WHERE billing_period_id = ANY(%s) ORDER BY model_id", (ids,)
                )
            ).fetchall()
        by_period: dict[str, list[dict[str, Any]]] = {}
        for line in lines:
            by_period.setdefault(line["billing_period_id"], []).append(line)
        return [{**p, "line_items": by_period.get(p["id"], [])} for p in periods]


async def _rollup_pending(conn: Conn, tenant_id: str, environment: str, start: date, end: date) -> bool:
    row = await (
        await conn.execute(
            "SELECT 1 FROM usage_rollup_pending WHERE tenant_id = %s AND environment = %s "
            "AND date >= %s AND date < %s LIMIT 1",
            (tenant_id, environment, start, end),
        )
    ).fetchone()
    return row is not None
