"""``relay requests export``: one tenant's request log over a time range, hot
(Postgres) and archived (Parquet) alike, as Parquet, CSV or JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from relay_server.settings import Settings

FORMATS = ("parquet", "csv", "jsonl")


def register(sub: Any) -> None:
    requests = sub.add_parser("requests", help="the request log").add_subparsers(dest="requests_command", required=True)
    export = requests.add_parser("export", help="export a tenant's requests (hot and archived) to a file")
    export.add_argument("--tenant", required=True)
    export.add_argument("--from", dest="start", required=True, type=date.fromisoformat, help="first UTC day (YYYY-MM-DD)")
    export.add_argument("--to", dest="end", required=True, type=date.fromisoformat, help="last UTC day, inclusive")
    export.add_argument("--format", choices=FORMATS, default="parquet")
    export.add_argument("--output", "-o", default="-", help="file to write (default: stdout; parquet needs a file)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.end < args.start:
        print("relay requests export: --to is before --from", file=sys.stderr)
        return 2
    if args.format == "parquet" and args.output == "-":
        print("relay requests export: --format parquet needs --output FILE", file=sys.stderr)
        return 2
    rows = asyncio.run(export(settings, args.tenant, args.start, args.end, args.format, args.output))
    print(f"exported {rows} request(s)", file=sys.stderr)
    return 0


async def export(settings: Settings, tenant_id: str, start: date, end: date, fmt: str, output: str) -> int:
    import pyarrow as pa  # noqa: PLC0415

    from relay_server.app.silos import open_data_plane  # noqa: PLC0415
    from relay_server.storage.archive import parquet  # noqa: PLC0415
    from relay_server.storage.archive.cold import ColdRequests  # noqa: PLC0415
    from relay_server.storage.archive.files import ArchiveFiles  # noqa: PLC0415
    from relay_server.storage.postgres.pool import Database  # noqa: PLC0415
    from relay_server.storage.postgres.usage import UsageQueries  # noqa: PLC0415

    lo = datetime.combine(start, time.min, tzinfo=UTC)
    hi = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    db = Database.from_settings(settings)
    await db.open()
    plane = await open_data_plane(settings, db)
    try:
        # Hot rows through the tenant's RLS-scoped transaction (in its silo, if it has one),
        # cold ones through the tenant's files only.
        hot = await UsageQueries(plane).requests(tenant_id, {}, lo, hi, None, 2**62)
        cold = await ColdRequests(db, ArchiveFiles.from_url(settings.archive_location)).table(tenant_id, {}, lo, hi)
    finally:
        await plane.close()
        await db.close()
    table = pa.concat_tables([cold.cast(parquet.SCHEMA), pa.Table.from_batches([parquet.batch(hot)], schema=parquet.SCHEMA)])
    table = table.sort_by([("created_at", "ascending"), ("id", "ascending")])
    _write(table, fmt, output)
    return table.num_rows


def _write(table: Any, fmt: str, output: str) -> None:
    import orjson  # noqa: PLC0415
    import pyarrow.csv as pacsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    if fmt == "parquet":
        pq.write_table(table, output, compression="zstd")
        return
    sink = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    try:
        if fmt == "csv":
            pacsv.write_csv(table, sink)
        else:
            for row in table.to_pylist():
                sink.write(orjson.dumps(row, default=str) + b"\n")
    finally:
        if sink is not sys.stdout.buffer:
            sink.close()
