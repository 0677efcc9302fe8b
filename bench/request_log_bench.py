"""Request-log write cost: µs of the writer process's CPU per row, by batch size.

Run: ``PYTHONPATH=server:proto_python:. .venv/bin/python bench/request_log_bench.py [--rows 2000] [--variants store,executemany]``

Starts its own embedded Postgres (the test suite's cluster helper: roles, RLS, partitions as in
production), makes one tenant and key, then for each batch size (1, 10, 40, 200) writes fresh rows
the way the request-log writer does — ``RequestLogStore.insert`` (placement lookup, one pooled
connection, rows + rollup marks) — and reports ``time.process_time()`` of this process per row
(Postgres runs in its own processes, so its CPU is not in that figure: ``postgres_cpu_us_per_row``
is the server's, all its processes, and the wall time per row is printed alongside).  Rows look like a non-streaming chat request's: costs, timestamps, a small metadata
object.

``executemany`` is the store as it was before the single-statement write (one ``executemany`` of
the rows and one of the marks, in a transaction), kept here so that one run shows both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import psutil
from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.request_log import COLUMNS, RequestLogStore, RequestRow
from tests.support.metering import make_key, make_tenant
from tests.support.pg import start_cluster

BATCHES = (1, 10, 40, 200)
_ids = count(1)


def _row(tenant: str, key: str) -> RequestRow:
    now = datetime.now(UTC)
    return RequestRow(
        id=f"req_bench{next(_ids):012d}", created_at=now, tenant_id=tenant, api_key_id=key, environment="live",
        request_type="chat", stream=False, started_at=now, status="success", end_user_id="user-42",
        requested_model="gpt-4o-mini", model_id="gpt-4o-mini", provider_id="openai", input_tokens=812,
        output_tokens=164, total_tokens=976, cache_read_tokens=0, cache_write_tokens=0,
        input_cost=Decimal("0.00012180"), output_cost=Decimal("0.00009840"), total_cost=Decimal("0.00022020"),
        markup_rate=Decimal("0.2000"), relay_revenue=Decimal("0.00004404"), cost_micros=265,
        first_token_at=now + timedelta(milliseconds=180), completed_at=now + timedelta(milliseconds=420),
        latency_ms=420, ttft_ms=180, http_status=200, request_metadata={"team": "search", "trace": "a1b2c3d4"},
        door="openai",
    )  # fmt: skip


# -- the store before this change, verbatim but for names ----------------------------------------

_OLD_INSERT = (
    f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT (id, created_at) DO NOTHING"
)
_OLD_MARK = """
INSERT INTO usage_rollup_pending (tenant_id, date, environment) VALUES (%s, %s, %s)
ON CONFLICT (tenant_id, date, environment) DO UPDATE SET marked_at = now()
"""
_JSONB = ("request_metadata", "guardrails")


def utc_day(moment: datetime) -> Any:
    return moment.astimezone(UTC).date()


def _old_params(row: RequestRow) -> tuple[Any, ...]:
    return tuple(
        Jsonb(getattr(row, name)) if name in _JSONB and getattr(row, name) is not None else getattr(row, name)
        for name in COLUMNS
    )


def executemany_insert(store: RequestLogStore) -> Callable[[list[RequestRow]], Awaitable[None]]:
    plane = store._plane  # noqa: SLF001 — the same placement lookup as the store's

    async def insert(rows: list[RequestRow]) -> None:
        groups = await plane.group(r.tenant_id for r in rows)
        for db, tenants in groups.items():
            mine = set(tenants)
            part = [r for r in rows if r.tenant_id in mine]
            marks = sorted({(r.tenant_id, utc_day(r.created_at), r.environment) for r in part})
            params = [_old_params(r) for r in part]
            async with db.system.connection(timeout=5.0) as conn, conn.transaction():
                async with conn.cursor() as cur:
                    await cur.executemany(_OLD_INSERT, params)
                    await cur.executemany(_OLD_MARK, marks)

    return insert


# -- the measurement -----------------------------------------------------------------------------


def _postgres_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the server and its children so far (backends, WAL writer, checkpointer)."""
    total = 0.0
    for proc in (postmaster, *postmaster.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def _measure(
    insert: Callable[[list[RequestRow]], Awaitable[None]],
    postmaster: psutil.Process,
    tenant: str,
    key: str,
    batch: int,
    rows: int,
) -> dict:
    batches = max(rows // batch, 20)
    for _ in range(5):  # warm-up: pool connections, prepared statements, type caches
        await insert([_row(tenant, key) for _ in range(batch)])
    work = [[_row(tenant, key) for _ in range(batch)] for _ in range(batches)]
    cpu0, wall0, pg0 = time.process_time(), time.perf_counter(), _postgres_cpu(postmaster)
    for rows_ in work:
        await insert(rows_)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    pg = _postgres_cpu(postmaster) - pg0
    n = batches * batch
    return {
        "batch": batch,
        "rows": n,
        "cpu_us_per_row": round(cpu / n * 1e6, 1),
        "postgres_cpu_us_per_row": round(pg / n * 1e6, 1),
        "wall_us_per_row": round(wall / n * 1e6, 1),
    }


async def main(rows: int, variants: list[str]) -> dict:
    base = Path(tempfile.mkdtemp(prefix="relay-request-log-bench-"))
    cluster = start_cluster(base / "pg")
    out: dict[str, Any] = {"rows_per_size": rows}
    try:
        pg = cluster.create_database()
        db = Database(pg.owner_dsn, pg.app_dsn, min_size=1, max_size=2)
        await db.open()
        try:
            tenant = make_tenant(pg.owner_dsn)
            key = make_key(pg.owner_dsn, tenant).key_id
            store = RequestLogStore(db)
            inserts = {"store": store.insert, "executemany": executemany_insert(store)}
            async with db.system.connection() as conn:
                got = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
            postmaster = psutil.Process(got["pid"] if got else 0).parent()
            assert postmaster is not None
            for name in variants:
                out[name] = [await _measure(inserts[name], postmaster, tenant, key, b, rows) for b in BATCHES]
            async with db.system_tx() as conn:
                got = await (
                    await conn.execute("SELECT count(*) AS n FROM requests WHERE tenant_id = %s", (tenant,))
                ).fetchone()
            out["rows_written"] = got["n"] if got else 0
        finally:
            await db.close()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows written per batch size and variant")
    parser.add_argument("--variants", default="executemany,store", help="comma-separated: executemany, store")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rows, args.variants.split(","))), indent=1))
