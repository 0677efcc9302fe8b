"""The request archiver: monthly ``requests`` partitions past the retention
window move to Parquet, then leave Postgres.

Per partition, each step idempotent so a crash anywhere reruns to completion
without losing or duplicating a row:

1. **write**   each tenant's rows → ``requests/month=…/tenant=…/part-0.parquet``
               (a fixed path: a rerun overwrites a half-written file);
2. **verify**  read the file back: row count and checksum must equal Postgres';
3. **record**  the manifest row (state ``verified``);
4. **detach**  under the detach's lock, recount every tenant; only if all still
               match the manifest, detach and mark ``detached`` in one transaction
               (from then on queries read the files, never both);
5. **drop**    drop the detached table, mark ``archived``.

One run at a time across nodes: a session advisory lock (``ARCHIVE_LOCK``),
which tenant erasure also takes.  Billing tables (``usage_daily``, billing
periods) are never touched.  ``fault`` is called after each step with the
step's name; tests raise from it to simulate a crash there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from relay_server.storage.archive.files import ArchiveFiles, file_path
from relay_server.storage.postgres import archive as manifest
from relay_server.storage.postgres.archive import ARCHIVE_LOCK, Partition, TenantSlice, next_month
from relay_server.storage.postgres.pool import Database

log = logging.getLogger(__name__)

STEPS = ("written", "verified", "recorded", "detached", "dropped")  # what ``fault`` is called with
_BATCH_ROWS = 20_000


class ArchiveMismatch(RuntimeError):
    """A file or the partition disagrees with what was verified: nothing is detached."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunReport:
    partitions: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    skipped: bool = False  # another node holds the lock


class RequestArchiver:
    def __init__(
        self,
        db: Database,
        files: ArchiveFiles,
        *,
        retention: timedelta,
        metrics: Any = None,
        now: Callable[[], datetime] = _utcnow,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._files = files
        self._retention = retention
        self._metrics = metrics
        self._now = now
        self._fault = fault or (lambda step: None)

    def cutoff(self) -> datetime:
        return self._now() - self._retention

    async def run_once(self) -> RunReport:
        """Archive every partition whose whole month is older than the retention window."""
        report = RunReport()
        started = time.monotonic()
        async with self._db.system.connection() as lock_conn:
            row = await (await lock_conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (ARCHIVE_LOCK,))).fetchone()
            if not row or not row["ok"]:
                report.skipped = True
                return report
            try:
                # The migration's promise: the archiver keeps this month's and next month's partitions made.
                await lock_conn.execute("SELECT relay_ensure_request_partitions(1)")
                for partition in await self._due():
                    try:
                        await self._archive(partition, report)
                    except Exception:
                        self._count("failures")
                        log.exception("request archive failed", extra={"partition": partition.name})
                        raise
                    report.partitions.append(partition.name)
                    self._count("partitions")
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(%s)", (ARCHIVE_LOCK,))
                with contextlib.suppress(Exception):  # never hides why the run failed
                    await self._observe_lag()
        report.seconds = time.monotonic() - started
        if report.partitions:
            log.info(
                "requests archived",
                extra={"partitions": report.partitions, "rows": report.rows, "bytes": report.bytes, "files": report.files,
                       "seconds": round(report.seconds, 3)},
            )  # fmt: skip
        return report

    async def _due(self) -> list[Partition]:
        cutoff = self.cutoff()
        async with self._db.system.connection() as conn:
            found = await manifest.partitions(conn)
        return [p for p in found if _month_end(p) <= cutoff]

    async def _observe_lag(self) -> None:
        """Seconds the oldest partition still in Postgres has been due (0 when caught up)."""
        if self._metrics is None:
            return
        due = await self._due()
        lag = (self.cutoff() - _month_end(due[0])).total_seconds() if due else 0.0
        self._metrics.archive_lag.set(max(0.0, lag))

    def _count(self, what: str, amount: int = 1) -> None:
        if self._metrics is not None:
            getattr(self._metrics, f"archive_{what}").inc(amount)

    async def _archive(self, partition: Partition, report: RunReport) -> None:
        from relay_server.storage.archive import parquet  # noqa: PLC0415  (pyarrow: loaded when a month is due)

        if partition.attached:
            async with self._db.system.connection() as conn:
                parquet.check_columns(await manifest.columns(conn, partition.name))
                pg = await manifest.slices(conn, partition.name)
                known = await manifest.manifest(conn, partition.name)
            for tenant_id, slice_ in sorted(pg.items()):
                row = known.get(tenant_id)
                if row is not None and row["state"] == "verified" and await self._still_valid(row, slice_):
                    continue  # an earlier run got this far
                size = await self._write_verified(partition, slice_)
                report.rows += slice_.row_count
                report.bytes += size
                report.files += 1
            for tenant_id in set(known) - set(pg):  # rows gone since an earlier run (tenant erased)
                async with self._db.system_tx() as conn:
                    await manifest.forget(conn, partition.name, tenant_id)
                await asyncio.to_thread(self._files.delete_file, known[tenant_id]["path"])
            await self._detach(partition)
        elif partition.exists:
            await self._check_detached_by_us(partition)
        self._fault("detached")
        async with self._db.system_tx() as conn:
            await manifest.drop(conn, partition.name)
        self._fault("dropped")

    async def _check_detached_by_us(self, partition: Partition) -> None:
        """A detached table is dropped only if this archiver detached it (or it holds nothing)."""
        async with self._db.system.connection() as conn:
            known = await manifest.manifest(conn, partition.name)
            rows = await manifest.slices(conn, partition.name)
        if rows and not (known and all(m["state"] == "detached" for m in known.values())):
            raise ArchiveMismatch(f"{partition.name} was detached outside the archiver; attach it again to archive it")

    async def _still_valid(self, row: dict[str, Any], slice_: TenantSlice) -> bool:
        return (row["row_count"], row["checksum"]) == (slice_.row_count, slice_.checksum) and (
            await asyncio.to_thread(self._files.size, row["path"]) == row["bytes"]
        )

    async def _write_verified(self, partition: Partition, slice_: TenantSlice) -> int:
        from relay_server.storage.archive import parquet  # noqa: PLC0415

        path = file_path(partition.month, slice_.tenant_id)
        await asyncio.to_thread(self._files.ensure_dir, path.rsplit("/", 1)[0])
        writer = await asyncio.to_thread(parquet.FileWriter, self._files.filesystem, self._files.full(path))
        try:
            async with self._db.system.connection() as conn:
                async for batch in manifest.stream_rows(conn, partition.name, slice_.tenant_id, _BATCH_ROWS):
                    await asyncio.to_thread(writer.add, batch)
        finally:
            written = await asyncio.to_thread(writer.close)
        self._fault("written")
        rows, checksum = await asyncio.to_thread(parquet.file_checksum, self._files.filesystem, self._files.full(path))
        if (written, rows, checksum) != (slice_.row_count, slice_.row_count, slice_.checksum):
            await asyncio.to_thread(self._files.delete_file, path)
            raise ArchiveMismatch(f"{path}: {rows} rows / {checksum} in the file, {slice_.row_count} / {slice_.checksum} in Postgres")
        size = await asyncio.to_thread(self._files.size, path) or 0
        sha = await asyncio.to_thread(self._files.sha256, path)
        self._fault("verified")
        async with self._db.system_tx() as conn:
            await manifest.record(conn, partition, slice_, path, size, sha)
        self._fault("recorded")
        self._count("rows", slice_.row_count)
        self._count("bytes", size)
        return size

    async def _detach(self, partition: Partition) -> None:
        async with self._db.system_tx() as conn:
            await manifest.detach(conn, partition.name)  # takes the locks that stop new rows arriving
            pg = await manifest.slices(conn, partition.name)
            known = await manifest.manifest(conn, partition.name)
            for tenant_id in set(pg) | set(known):
                s, m = pg.get(tenant_id), known.get(tenant_id)
                if s is None or m is None or (m["row_count"], m["checksum"]) != (s.row_count, s.checksum):
                    # Late rows arrived (or rows went) since verification: roll the detach back, rerun rewrites.
                    raise ArchiveMismatch(f"{partition.name}: tenant {tenant_id} changed since it was verified")
                if await asyncio.to_thread(self._files.size, m["path"]) != m["bytes"]:
                    raise ArchiveMismatch(f"{m['path']} is missing or changed since it was verified")


def _month_end(p: Partition) -> datetime:
    end = next_month(p.month)
    return datetime(end.year, end.month, 1, tzinfo=UTC)
