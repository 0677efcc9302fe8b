"""Request archival figures: archive throughput and query latency over a year of history.

Run: ``PYTHONPATH=server:proto_python:. .venv/bin/python bench/archive_bench.py [--months 3 --rows 200000 --year-rows 50000]``

Starts its own embedded Postgres (the test suite's cluster helper, roles and RLS as in production),
generates history with the test suite's generator (rows straight into monthly partitions, rolled up
into usage_daily), archives it to a temporary local directory and prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from relay_server.domain.usage import UsageFilter
from relay_server.storage.archive.cold import ColdRequests
from relay_server.storage.archive.files import ArchiveFiles
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.usage import UsageQueries
from relay_server.workers.archiver import RequestArchiver
from tests.support.history import generate, month_start, roll_up
from tests.support.metering import make_key, make_tenant
from tests.support.pg import start_cluster


def _months_back(n: int) -> date:
    month = datetime.now(UTC).date().replace(day=1)
    for _ in range(n):
        month = (month - timedelta(days=1)).replace(day=1)
    return month


async def _timed(fn, repeat: int = 7) -> float:  # noqa: ANN001
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(runs), 1)


async def main(months: int, rows: int, year_rows: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="relay-archive-bench-"))
    cluster = start_cluster(base / "pg")
    out: dict = {}
    try:
        # 1. Throughput: `months` months of `rows` rows (one tenant 3/4, another 1/4).
        pg = cluster.create_database()
        db = Database(pg.owner_dsn, pg.app_dsn, min_size=1, max_size=4)
        await db.open()
        files = ArchiveFiles.from_url(str(base / "archive1"))
        a, b = make_tenant(pg.owner_dsn), make_tenant(pg.owner_dsn)
        ka, kb = make_key(pg.owner_dsn, a).key_id, make_key(pg.owner_dsn, b).key_id
        t0 = time.perf_counter()
        for i in range(months):
            month = _months_back(2 + i)
            generate(pg.owner_dsn, a, ka, month, rows * 3 // 4)
            generate(pg.owner_dsn, b, kb, month, rows - rows * 3 // 4)
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        report = await RequestArchiver(db, files, retention=timedelta(days=30)).run_once()
        out["archive"] = {"months": months, "rows": report.rows, "files": report.files, "bytes": report.bytes,
                          "seconds": round(report.seconds, 2), "rows_per_s": round(report.rows / report.seconds),
                          "bytes_per_row": round(report.bytes / report.rows, 1)}  # fmt: skip
        await db.close()

        # 2. Query latency over a year: 12 archived months + the hot current month.
        pg = cluster.create_database()
        db = Database(pg.owner_dsn, pg.app_dsn, min_size=1, max_size=4)
        await db.open()
        files = ArchiveFiles.from_url(str(base / "archive2"))
        t = make_tenant(pg.owner_dsn)
        other = make_tenant(pg.owner_dsn)
        k, ko = make_key(pg.owner_dsn, t).key_id, make_key(pg.owner_dsn, other).key_id
        for i in range(2, 14):
            generate(pg.owner_dsn, t, k, _months_back(i), year_rows)
            generate(pg.owner_dsn, other, ko, _months_back(i), year_rows // 4)
        generate(pg.owner_dsn, t, k, _months_back(0), year_rows // 4)
        await roll_up(db)
        q = UsageQueries(db, cold=ColdRequests(db, files))
        hot_only = UsageQueries(db)
        mid = month_start(_months_back(7))
        usage_filter = UsageFilter(_months_back(13), _months_back(0) + timedelta(days=27), "test")
        probes = {
            "first_page_50": lambda qq: qq.requests(t, {}, None, None, None, 51),
            "status_error_page_50": lambda qq: qq.requests(t, {"status": "error"}, None, None, None, 51),
            "one_week_7_months_ago_page_50": lambda qq: qq.requests(t, {}, mid + timedelta(days=7), mid + timedelta(days=14), None, 51),
            "cursor_mid_year_page_50": lambda qq: qq.requests(t, {}, None, None, (mid + timedelta(days=10), "req_~"), 51),
            "usage_by_model_366_days": lambda qq: qq.usage(t, usage_filter, "model"),
        }
        out["query_ms_before_archive"] = {name: await _timed(lambda p=p: p(hot_only)) for name, p in probes.items()}
        report = await RequestArchiver(db, files, retention=timedelta(days=30)).run_once()
        out["year"] = {"rows_per_month": year_rows, "archived_rows": report.rows, "files": report.files,
                       "bytes": report.bytes, "archive_rows_per_s": round(report.rows / report.seconds)}  # fmt: skip
        out["query_ms_after_archive"] = {name: await _timed(lambda p=p: p(q)) for name, p in probes.items()}
        await db.close()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per month (throughput run)")
    parser.add_argument("--year-rows", type=int, default=50_000, help="rows per month of the one-year query run")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.months, args.rows, args.year_rows)), indent=2))
