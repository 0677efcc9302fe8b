"""Reading archived request rows: DuckDB over one tenant's Parquet files.

The tenant wall has two layers, like RLS for hot rows: the file list comes
from the manifest read inside the tenant's RLS-scoped transaction and every
path must lie in that tenant's directories (``owned_by``) — no other tenant's
file is ever opened — and the SQL filters on ``tenant_id`` again.  DuckDB scans
the files through a pyarrow dataset (local or S3 alike), which receives the
projection and the WHERE clause (predicate pushdown: row groups whose
statistics exclude the filter are skipped).

DuckDB and pyarrow (~115 MB resident together) are imported on the first read
of an archived file, not at import: every worker builds a ``ColdRequests`` at
start, and a tenant with no archived month never needs them.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from relay_server.storage.archive.files import ArchiveFiles, owned_by
from relay_server.storage.postgres.archive import cold_files
from relay_server.storage.postgres.pool import Database

_EPSILON = timedelta(microseconds=1)
if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

FILTER_COLUMNS = frozenset({"api_key_id", "model_id", "status", "end_user_id", "environment", "id"})


class ColdRequests:
    def __init__(self, db: Database, files: ArchiveFiles) -> None:
        self._db = db
        self._files = files
        self._duck: duckdb.DuckDBPyConnection | None = None  # opened once (~50 ms); each query uses a cursor of it
        self._duck_lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._duck_lock:
            if self._duck is None:
                import duckdb  # noqa: PLC0415  (lazy: see the module docstring)

                self._duck = duckdb.connect(config={"threads": 1})  # a page read, not a warehouse query
            cursor = self._duck.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    async def paths(self, tenant_id: str, start: datetime | None, end: datetime | None) -> list[str]:
        """The tenant's archived files that may hold rows in [start, end), newest month first."""
        async with self._db.tenant_tx(tenant_id) as conn:
            found = await cold_files(conn, tenant_id, start, end)
        paths = [path for _, path in found]
        for path in paths:
            if not owned_by(path, tenant_id):
                raise PermissionError(f"archive manifest lists {path!r} for tenant {tenant_id!r}")
        return paths

    async def table(
        self, tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None = None, limit: int | None = None,
    ) -> pa.Table:  # fmt: skip
        """Matching archived rows, newest first, as an Arrow table."""
        if after is not None:  # a page after a cursor holds nothing newer than it
            end = min(end, after[0] + _EPSILON) if end is not None else after[0] + _EPSILON
        paths = await self.paths(tenant_id, start, end)
        if not paths:
            from relay_server.storage.archive.parquet import SCHEMA  # noqa: PLC0415

            return SCHEMA.empty_table()
        return await asyncio.to_thread(self._query, paths, tenant_id, filters, start, end, after, limit)

    async def requests(
        self, tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None, limit: int,
    ) -> list[dict[str, Any]]:  # fmt: skip
        if after is not None:  # as in ``table``: nothing newer than the cursor
            end = min(end, after[0] + _EPSILON) if end is not None else after[0] + _EPSILON
        paths = await self.paths(tenant_id, start, end)
        if not paths:  # no archived month in range: pyarrow and DuckDB stay unloaded
            return []
        from relay_server.storage.archive.parquet import row_from_arrow  # noqa: PLC0415

        table = await asyncio.to_thread(self._query, paths, tenant_id, filters, start, end, after, limit)
        return [row_from_arrow(r) for r in table.to_pylist()]

    def _query(
        self, paths: list[str], tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None, limit: int | None,
    ) -> pa.Table:  # fmt: skip
        import pyarrow as pa  # noqa: PLC0415

        from relay_server.storage.archive.parquet import COLUMNS, SCHEMA  # noqa: PLC0415

        where: list[str] = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        for column, value in filters.items():
            if column not in FILTER_COLUMNS:
                raise ValueError(f"unknown filter {column!r}")
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if start is not None:
            where.append("created_at >= ?")
            params.append(start)
        if end is not None:
            where.append("created_at < ?")
            params.append(end)
        if after is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [after[0], after[0], after[1]]
        con = self._cursor()
        try:
            sql = f"SELECT {', '.join(COLUMNS)} FROM {{source}} WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC"
            if limit is None:
                return self._scan(con, paths, sql, params)
            # One month's file at a time, newest first: months are disjoint, so a page is complete as soon
            # as it has ``limit`` rows (the first page of a year of history opens one file, not twelve).
            parts: list[pa.Table] = []
            remaining = limit
            for path in paths:
                part = self._scan(con, [path], sql + " LIMIT ?", [*params, remaining])
                parts.append(part)
                remaining -= part.num_rows
                if remaining <= 0:
                    break
            return pa.concat_tables(parts) if parts else SCHEMA.empty_table()
        finally:
            con.close()

    def _scan(self, con: duckdb.DuckDBPyConnection, paths: list[str], sql: str, params: list[Any]) -> pa.Table:
        full = [self._files.full(p) for p in paths]
        if self._files.local:
            # DuckDB's own Parquet reader: row-group statistics and the filters pushed into the scan.
            return con.sql(sql.format(source="read_parquet(?)"), params=[full, *params]).to_arrow_table()
        # Object storage through pyarrow's filesystem (DuckDB pushes projection and filters into the dataset).
        import pyarrow.dataset as ds  # noqa: PLC0415

        from relay_server.storage.archive.parquet import SCHEMA  # noqa: PLC0415

        con.register("archived", ds.dataset(full, schema=SCHEMA, format="parquet", filesystem=self._files.filesystem))
        try:
            return con.sql(sql.format(source="archived"), params=params).to_arrow_table()
        finally:
            con.unregister("archived")
