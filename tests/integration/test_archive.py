"""The request archiver on real Postgres and real Parquet files: old months
move out, every query answers exactly as before (to the micro-dollar), a crash
after any step reruns to completion, and the tenant wall holds for cold rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from relay_server.api.admin_support import decode_cursor, encode_cursor
from relay_server.api.admin_usage import _record
from relay_server.domain.usage import UsageFilter
from relay_server.observability.metrics import RelayMetrics
from relay_server.storage.archive.cold import ColdRequests
from relay_server.storage.archive.files import ArchiveFiles
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.usage import UsageQueries
from relay_server.workers.archiver import STEPS, ArchiveMismatch, RequestArchiver
from tests.support.history import generate, month_start, roll_up
from tests.support.metering import make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


def _months_back(n: int) -> date:
    month = datetime.now(UTC).date().replace(day=1)
    for _ in range(n):
        month = (month - timedelta(days=1)).replace(day=1)
    return month


THIS_MONTH = _months_back(0)
OLD_MONTHS = [_months_back(4), _months_back(3), _months_back(2)]  # all past a 30-day window


@dataclass
class History:
    a: str
    b: str
    files: ArchiveFiles
    queries: UsageQueries
    cold: ColdRequests
    counts: dict[str, int]  # tenant → rows


async def _history(database: Database, pg_db: TestDatabase, root: Path, per_month: dict[str, int], hot: int) -> History:
    a, b = make_tenant(pg_db.owner_dsn), make_tenant(pg_db.owner_dsn)
    counts = {a: 0, b: 0}
    for tenant, rows in ((a, per_month["a"]), (b, per_month["b"])):
        key = make_key(pg_db.owner_dsn, tenant).key_id
        for month in OLD_MONTHS:
            generate(pg_db.owner_dsn, tenant, key, month, rows)
            counts[tenant] += rows
        generate(pg_db.owner_dsn, tenant, key, THIS_MONTH, hot)
        counts[tenant] += hot
    await roll_up(database)
    files = ArchiveFiles.from_url(str(root))
    cold = ColdRequests(database, files)
    return History(a, b, files, UsageQueries(database, cold=cold), cold, counts)


def _archiver(database: Database, h: History, **kw: Any) -> RequestArchiver:
    return RequestArchiver(database, h.files, retention=timedelta(days=30), **kw)


async def _all(q: UsageQueries, tenant: str, filters: dict[str, Any] | None = None, start: datetime | None = None,
               end: datetime | None = None, page: int = 700) -> list[bytes]:  # fmt: skip
    """Every ListRequests record, page by page through the cursor, serialized as the API sends it."""
    out: list[bytes] = []
    after = None
    for _ in range(10_000):
        rows = await q.requests(tenant, filters or {}, start, end, after, page + 1)
        out += [_record(r).SerializeToString(deterministic=True) for r in rows[:page]]
        if len(rows) <= page:
            return out
        after = decode_cursor(encode_cursor(rows[page - 1]["created_at"], rows[page - 1]["id"]))  # the token round trip
    raise AssertionError("pagination did not end")


async def _views(h: History, tenant: str) -> dict[str, Any]:
    mid = month_start(OLD_MONTHS[1])
    views: dict[str, Any] = {
        "all": await _all(h.queries, tenant),
        "errors_of_a_model": await _all(h.queries, tenant, {"status": "error", "environment": "test"}),
        "end_user": await _all(h.queries, tenant, {"end_user_id": "user_1"}),
        "window": await _all(h.queries, tenant, start=mid + timedelta(days=3), end=mid + timedelta(days=9), page=97),
    }
    first, last = OLD_MONTHS[0], THIS_MONTH + timedelta(days=27)
    for group in ("day", "model", "api_key", "end_user", None):
        views[f"usage_{group}"] = await h.queries.usage(tenant, UsageFilter(first, last, "test"), group)
    return views


async def _pg_rows(database: Database) -> dict[str, int]:
    async with database.system.connection() as conn:
        rows = await (await conn.execute("SELECT tenant_id, count(*) AS n FROM requests GROUP BY 1")).fetchall()
    return {r["tenant_id"]: r["n"] for r in rows}


async def test_old_months_move_to_parquet_and_every_query_answers_the_same(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 6000, "b": 1500}, hot=300)
    before = {t: await _views(h, t) for t in (h.a, h.b)}
    assert len(before[h.a]["all"]) == h.counts[h.a] and before[h.a]["errors_of_a_model"] and before[h.a]["window"]

    metrics = RelayMetrics(CollectorRegistry())
    report = await _archiver(database, h, metrics=metrics).run_once()

    assert report.partitions == [f"requests_y{m:%Y}m{m:%m}" for m in OLD_MONTHS]
    assert report.rows == 3 * (6000 + 1500) and report.files == 6
    assert await _pg_rows(database) == {h.a: 300, h.b: 300}  # Postgres holds only the hot rows
    async with database.system.connection() as conn:
        for name in report.partitions:
            assert (await (await conn.execute("SELECT to_regclass(%s) AS t", (name,))).fetchone())["t"] is None
        states = await (await conn.execute("SELECT state, count(*) AS n, sum(row_count) AS rows FROM request_archive_files GROUP BY 1")).fetchall()
    assert [(s["state"], s["n"], s["rows"]) for s in states] == [("archived", 6, 3 * 7500)]
    one = pq.ParquetFile(str(tmp_path / "archive" / f"requests/month={OLD_MONTHS[0]:%Y-%m}/tenant={h.a}/part-0.parquet"))
    assert one.metadata.num_rows == 6000 and one.metadata.row_group(0).column(0).compression == "ZSTD"

    after = {t: await _views(h, t) for t in (h.a, h.b)}
    for tenant in (h.a, h.b):
        for name, view in before[tenant].items():
            assert after[tenant][name] == view, name  # identical records and usage sums, micro-dollar for micro-dollar

    assert metrics.archive_partitions._value.get() == 3 and metrics.archive_rows._value.get() == 22500
    assert metrics.archive_bytes._value.get() == report.bytes > 0 and metrics.archive_lag._value.get() == 0
    assert metrics.archive_failures._value.get() == 0
    again = await _archiver(database, h).run_once()
    assert again.partitions == [] and await _pg_rows(database) == {h.a: 300, h.b: 300}


class Crash(Exception):
    pass


def _crash_at(step: str):  # noqa: ANN202
    fired = []

    def fault(name: str) -> None:
        if name == step and not fired:
            fired.append(name)
            raise Crash(step)

    return fault


@pytest.mark.parametrize("step", STEPS)
async def test_a_crash_after_any_step_reruns_to_completion_without_loss_or_duplicates(
    database: Database, pg_db: TestDatabase, tmp_path: Path, step: str
) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 400, "b": 150}, hot=20)
    before = await _all(h.queries, h.a)
    metrics = RelayMetrics(CollectorRegistry())
    with pytest.raises(Crash):
        await _archiver(database, h, fault=_crash_at(step), metrics=metrics).run_once()
    assert metrics.archive_failures._value.get() == 1
    mid = await _all(h.queries, h.a)  # whatever step it stopped after, every row is visible exactly once
    assert mid == before
    await _archiver(database, h).run_once()
    assert await _all(h.queries, h.a) == before
    assert await _pg_rows(database) == {h.a: 20, h.b: 20}
    async with database.system.connection() as conn:
        states = await (await conn.execute("SELECT state, count(*) AS n FROM request_archive_files GROUP BY 1")).fetchall()
    assert [(s["state"], s["n"]) for s in states] == [("archived", 6)]


async def test_rows_arriving_after_verification_are_archived_not_lost(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 300, "b": 100}, hot=10)
    with pytest.raises(Crash):
        await _archiver(database, h, fault=_crash_at("recorded")).run_once()
    key = make_key(pg_db.owner_dsn, h.a).key_id
    with psycopg.connect(pg_db.owner_dsn) as conn:  # a late (spooled, replayed) row for the first month
        conn.execute(
            "INSERT INTO requests (id, created_at, tenant_id, api_key_id, request_type, started_at, status, cost_micros) "
            "VALUES ('req_late', %s, %s, %s, 'chat', %s, 'success', 4242)",
            (month_start(OLD_MONTHS[0]) + timedelta(days=2), h.a, key, month_start(OLD_MONTHS[0]) + timedelta(days=2)),
        )
    await _archiver(database, h).run_once()
    rows = await h.queries.requests(h.a, {}, None, None, None, 100_000)
    assert [r["cost_micros"] for r in rows if r["id"] == "req_late"] == [4242] and len(rows) == h.counts[h.a] + 1


async def test_a_partition_that_changes_under_the_detach_is_not_detached(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 200, "b": 50}, hot=5)
    archiver = _archiver(database, h)
    original = archiver._write_verified
    first = OLD_MONTHS[0]

    async def then_a_late_row(partition, slice_):  # noqa: ANN001, ANN202
        size = await original(partition, slice_)
        if partition.month == first and slice_.tenant_id == h.b:
            with psycopg.connect(pg_db.owner_dsn) as conn:
                conn.execute("UPDATE requests SET cost_micros = cost_micros + 1 WHERE tenant_id = %s AND id = "
                             "(SELECT min(id) FROM requests WHERE tenant_id = %s)", (h.a, h.a))  # fmt: skip
        return size

    archiver._write_verified = then_a_late_row  # type: ignore[method-assign]
    with pytest.raises(ArchiveMismatch):
        await archiver.run_once()
    assert (await _pg_rows(database))[h.a] == h.counts[h.a]  # nothing left Postgres
    await _archiver(database, h).run_once()
    assert (await _pg_rows(database))[h.a] == 5


async def test_another_tenants_archived_rows_are_unreachable(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 300, "b": 100}, hot=10)
    await _archiver(database, h).run_once()
    a_ids = {r["id"] for r in await h.queries.requests(h.a, {}, None, None, None, 100_000)}
    b_rows = await h.queries.requests(h.b, {}, None, None, None, 100_000)
    assert len(b_rows) == h.counts[h.b] and not a_ids & {r["id"] for r in b_rows}
    assert all(f"tenant={h.b}/" in p for p in await h.cold.paths(h.b, None, None))
    # Even a manifest row that points B at A's file is refused before any file is opened.
    with psycopg.connect(pg_db.owner_dsn) as conn:
        conn.execute(
            "INSERT INTO request_archive_files (partition_name, month, tenant_id, path, row_count, bytes, checksum, "
            "file_sha256, state) SELECT 'requests_y1999m01', month, %s, path, row_count, bytes, checksum, file_sha256, "
            "'archived' FROM request_archive_files WHERE tenant_id = %s LIMIT 1",
            (h.b, h.a),
        )
    with pytest.raises(PermissionError):
        await h.queries.requests(h.b, {}, None, None, None, 100_000)
    table = await h.cold.table(h.a, {}, None, None)
    assert set(table.column("tenant_id").to_pylist()) == {h.a}


async def test_hard_deleting_a_tenant_leaves_nothing_of_it_anywhere(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    from relay_server.storage.postgres import jobs  # noqa: PLC0415
    from tests.support.tenancy import tenancy_for  # noqa: PLC0415

    h = await _history(database, pg_db, tmp_path / "archive", {"a": 300, "b": 100}, hot=10)
    with pytest.raises(Crash):  # one month only half-way: detached, not yet dropped
        await _archiver(database, h, fault=_crash_at("detached")).run_once()
    with psycopg.connect(pg_db.owner_dsn) as conn:
        conn.execute("UPDATE tenants SET status = 'deleted', deleted_at = now() - interval '40 days', "
                     "status_changed_at = now() - interval '40 days' WHERE id = %s", (h.a,))  # fmt: skip
    async with tenancy_for(database, None) as t:
        t.lifecycle_jobs.archive = h.files
        async with database.system_tx() as conn:
            await jobs.enqueue(conn, "hard_delete", payload={"tenant_id": h.a})
        assert await t.runner.drain() == 1
    assert h.files.tenant_files(h.a) == [] and h.files.tenant_files(h.b)
    leftovers = [str(p) for p in (tmp_path / "archive").rglob("*") if h.a in str(p)]
    assert leftovers == []
    for path in (tmp_path / "archive").rglob("*.parquet"):  # B's files hold no row of A's
        assert h.a not in set(pq.read_table(path, columns=["tenant_id"]).column("tenant_id").to_pylist())
    with psycopg.connect(pg_db.owner_dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname = 'tenant_id' AND NOT a.attisdropped")]  # fmt: skip
        for table in tables:  # partitions and the detached month included
            n = conn.execute(f'SELECT count(*) FROM "{table}" WHERE tenant_id = %s', (h.a,)).fetchone()[0]
            assert n == 0, table
        assert conn.execute("SELECT count(*) FROM tenants WHERE id = %s", (h.a,)).fetchone()[0] == 0
    await _archiver(database, h).run_once()  # the interrupted archive completes for the tenant that is left
    assert len(await _all(h.queries, h.b)) == h.counts[h.b]


async def test_the_archive_on_an_s3_compatible_server(
    database: Database, pg_db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    from relay_server.stack.processes import free_port  # noqa: PLC0415

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for name, value in (("AWS_ACCESS_KEY_ID", "relay-test"), ("AWS_SECRET_ACCESS_KEY", "relay-test-secret"),
                            ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_REGION", "us-east-1"),
                            ("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")):  # fmt: skip
            monkeypatch.setenv(name, value)
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="relay-archive")
        h = await _history(database, pg_db, tmp_path / "unused", {"a": 500, "b": 100}, hot=10)
        h.files = ArchiveFiles.from_url("s3://relay-archive/prod/requests-archive")
        h.cold = ColdRequests(database, h.files)
        h.queries = UsageQueries(database, cold=h.cold)
        before = await _all(h.queries, h.a)
        report = await _archiver(database, h).run_once()
        assert report.files == 6 and await _all(h.queries, h.a) == before
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
                .list_objects_v2(Bucket="relay-archive")["Contents"]]  # fmt: skip
        assert f"prod/requests-archive/requests/month={OLD_MONTHS[0]:%Y-%m}/tenant={h.a}/part-0.parquet" in keys
        assert h.files.erase_tenant(h.a) == 3 and h.files.tenant_files(h.a) == [] and len(h.files.tenant_files(h.b)) == 3
    finally:
        server.stop()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
async def test_relay_requests_export_writes_hot_and_archived_rows_of_one_tenant(
    database: Database, pg_db: TestDatabase, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio  # noqa: PLC0415
    import json  # noqa: PLC0415

    import pyarrow.csv as pacsv  # noqa: PLC0415

    from relay_server.cli import main  # noqa: PLC0415
    from relay_server.settings import Settings  # noqa: PLC0415

    h = await _history(database, pg_db, tmp_path / "archive", {"a": 200, "b": 50}, hot=10)
    await _archiver(database, h).run_once()
    settings = Settings(database_url=pg_db.owner_dsn, app_database_url=pg_db.app_dsn, archive_url=str(tmp_path / "archive"))
    out = tmp_path / f"export.{fmt}"
    start, end = OLD_MONTHS[1], THIS_MONTH + timedelta(days=27)  # the first archived month is outside the range
    argv = ["requests", "export", "--tenant", h.a, "--from", start.isoformat(), "--to", end.isoformat(), "--format", fmt, "-o", str(out)]
    monkeypatch.setattr(Settings, "from_env", classmethod(lambda cls, env=None, **kw: settings))
    assert await asyncio.to_thread(main, argv) == 0
    if fmt == "parquet":
        table = pq.read_table(out)
    elif fmt == "csv":
        table = pacsv.read_csv(out)
    else:
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert {r["tenant_id"] for r in lines} == {h.a} and len(lines) == 2 * 200 + 10
        return
    assert table.num_rows == 2 * 200 + 10 and set(table.column("tenant_id").to_pylist()) == {h.a}


async def test_a_late_row_for_an_archived_month_leaves_that_months_usage_totals_alone(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 200, "b": 50}, hot=5)
    await _archiver(database, h).run_once()
    day = OLD_MONTHS[0] + timedelta(days=3)
    usage = UsageFilter(OLD_MONTHS[0], OLD_MONTHS[0] + timedelta(days=27), "test")
    before = await h.queries.usage(h.a, usage, "day")
    key = make_key(pg_db.owner_dsn, h.a).key_id
    with psycopg.connect(pg_db.owner_dsn) as conn:  # lands in requests_default: the month's partition is gone
        conn.execute(
            "INSERT INTO requests (id, created_at, tenant_id, api_key_id, environment, model_id, request_type, started_at, "
            "status, cost_micros) SELECT 'req_late', %s, %s, %s, 'test', id, 'chat', %s, 'success', 999 FROM models LIMIT 1",
            (month_start(day) + timedelta(days=3, hours=1), h.a, key, month_start(day) + timedelta(days=3, hours=1)),
        )
        conn.execute("INSERT INTO usage_rollup_pending (tenant_id, date, environment) VALUES (%s, %s, 'test')", (h.a, day))
    await roll_up(database)
    assert await h.queries.usage(h.a, usage, "day") == before
    assert "req_late" in {r["id"] for r in await h.queries.requests(h.a, {}, None, None, None, 100_000)}


async def test_a_partition_detached_by_hand_is_never_dropped(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    h = await _history(database, pg_db, tmp_path / "archive", {"a": 100, "b": 20}, hot=3)
    name = f"requests_y{OLD_MONTHS[0]:%Y}m{OLD_MONTHS[0]:%m}"
    with psycopg.connect(pg_db.owner_dsn) as conn:
        conn.execute(f"ALTER TABLE requests DETACH PARTITION {name}")
    with pytest.raises(ArchiveMismatch):
        await _archiver(database, h).run_once()
    with psycopg.connect(pg_db.owner_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 120
