"""Reading archived request rows: DuckDB over one tenant's Parquet files.

The tenant wall has two layers, like RLS for hot rows: the file list comes
from the manifest read inside the tenant's RLS-scoped transaction and every
path must lie in that tenant's directories (``owned_by``) — no other tenant's
file is ever opened — and the SQL filters on ``tenant_id`` again.  DuckDB scans
the files through a pyarrow dataset (local or S3 alike), which receives the
projection and the WHERE clause (predicate pushdown: row groups whose
statistics exclude the filter are skipped).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from relay_server.storage.archive.files import ArchiveFiles, owned_by
from relay_server.storage.archive.parquet import COLUMNS, SCHEMA, row_from_arrow
from relay_server.storage.postgres.archive import cold_files
from relay_server.storage.postgres.pool import Database

FILTER_COLUMNS = frozenset({"api_key_id", "model_id", "status", "end_user_id", "environment"})


class ColdRequests:
    def __init__(self, db: Database, files: ArchiveFiles) -> None:
        self._db = db
        self._files = files

    async def paths(self, tenant_id: str, start: datetime | None, end: datetime | None) -> list[str]:
        async with self._db.tenant_tx(tenant_id) as conn:
            paths = await cold_files(conn, tenant_id, start.date() if start else None, end.date() if end else None)
        for path in paths:
            if not owned_by(path, tenant_id):
                raise PermissionError(f"archive manifest lists {path!r} for tenant {tenant_id!r}")
        return paths

    async def table(
        self, tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None = None, limit: int | None = None,
    ) -> pa.Table:  # fmt: skip
        """Matching archived rows, newest first, as an Arrow table."""
        paths = await self.paths(tenant_id, start, end)
        if not paths:
            return SCHEMA.empty_table()
        return await asyncio.to_thread(self._query, paths, tenant_id, filters, start, end, after, limit)

    async def requests(
        self, tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None, limit: int,
    ) -> list[dict[str, Any]]:  # fmt: skip
        table = await self.table(tenant_id, filters, start, end, after, limit)
        return [row_from_arrow(r) for r in table.to_pylist()]

    def _query(
        self, paths: list[str], tenant_id: str, filters: dict[str, Any], start: datetime | None, end: datetime | None,
        after: tuple[datetime, str] | None, limit: int | None,
    ) -> pa.Table:  # fmt: skip
        where, params = ["tenant_id = ?"], [tenant_id]
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
        dataset = ds.dataset([self._files.full(p) for p in paths], schema=SCHEMA, format="parquet",
                             filesystem=self._files.filesystem)  # fmt: skip
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("archived", dataset)  # a pyarrow dataset: DuckDB pushes projection and filters into the scan
            query = f"SELECT {', '.join(COLUMNS)} FROM archived WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC"
            if limit is not None:
                query += " LIMIT ?"
                params.append(limit)
            return con.sql(query, params=params).to_arrow_table()
        finally:
            con.close()
