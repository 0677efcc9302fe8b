"""Generated request history for the archiver's tests and bench: rows inserted
straight into monthly partitions (as the request-log writer would have left
them), then rolled up into usage_daily the way the rollup worker does."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg

from relay_server.storage.postgres.archive import next_month
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.usage import UsageRollupStore

_INSERT = """
INSERT INTO requests (id, created_at, tenant_id, api_key_id, environment, end_user_id, requested_model, model_id,
    provider_id, request_type, stream, input_tokens, output_tokens, total_tokens, input_cost, output_cost, total_cost,
    relay_revenue, cost_micros, started_at, completed_at, latency_ms, status, error_code, http_status, request_metadata)
SELECT %(tag)s || lpad(g::text, 7, '0'),
       %(lo)s + (g::bigint * %(step)s) * interval '1 millisecond',
       %(tenant)s, %(key)s, 'test', CASE WHEN g %% 5 = 0 THEN 'user_' || (g %% 3) END,
       m.id, m.id, m.provider_id, 'chat', g %% 4 = 0,
       10 + g %% 50, 5 + g %% 40, 15 + g %% 50 + g %% 40,
       (10 + g %% 50) * 0.00000015, (5 + g %% 40) * 0.0000006, (10 + g %% 50) * 0.00000015 + (5 + g %% 40) * 0.0000006,
       ((10 + g %% 50) * 0.00000015 + (5 + g %% 40) * 0.0000006) * 0.2,
       (((10 + g %% 50) * 0.15 + (5 + g %% 40) * 0.6) * 1.2)::bigint + g %% 7,
       %(lo)s + (g::bigint * %(step)s) * interval '1 millisecond',
       %(lo)s + (g::bigint * %(step)s + 300) * interval '1 millisecond', 300 + g %% 100,
       CASE WHEN g %% 17 = 0 THEN 'error' ELSE 'success' END, CASE WHEN g %% 17 = 0 THEN 'upstream_error' END,
       CASE WHEN g %% 17 = 0 THEN 502 ELSE 200 END,
       jsonb_build_object('usage_source', 'provider', 'n', g)
  FROM generate_series(0, %(n)s - 1) AS g
  JOIN LATERAL (SELECT id, provider_id FROM models ORDER BY id OFFSET (g %% 2) LIMIT 1) m ON true
"""


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def generate(owner_dsn: str, tenant_id: str, key_id: str, month: date, rows: int) -> None:
    """``rows`` requests spread over ``month`` (its partition is made first)."""
    lo, hi = month_start(month), month_start(next_month(month))
    step = int((hi - lo).total_seconds() * 1000 // max(rows, 1))
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("SELECT relay_create_request_partition(%s)", (month,))
        conn.execute(_INSERT, {"tag": f"req_{tenant_id[-6:]}{month:%y%m}", "lo": lo, "step": step, "tenant": tenant_id,
                               "key": key_id, "n": rows})  # fmt: skip
        conn.execute(
            "INSERT INTO usage_rollup_pending (tenant_id, date, environment) "
            "SELECT DISTINCT tenant_id, (created_at AT TIME ZONE 'UTC')::date, environment FROM requests "
            "WHERE tenant_id = %s AND created_at >= %s AND created_at < %s ON CONFLICT DO NOTHING",
            (tenant_id, lo, hi),
        )


async def roll_up(db: Database) -> None:
    store = UsageRollupStore(db)
    while await store.run_pending(500):
        pass
