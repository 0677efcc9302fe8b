"""The Parquet shape of a ``requests`` row, and the checksum both sides compute.

The schema is written down (not inferred) so every file of every month has the
same types: money stays exact (NUMERIC(12,8) → decimal128(12,8); micro-dollars
as int64), times are UTC microseconds, ``request_metadata`` and ``guardrails`` are their JSON text.
A column added to ``requests`` by a later migration must be added here too;
the archiver refuses a partition whose columns differ (``check_columns``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    ("id", pa.string()), ("created_at", _TS), ("tenant_id", pa.string()), ("api_key_id", pa.string()),
    ("environment", pa.string()), ("end_user_id", pa.string()), ("requested_model", pa.string()),
    ("model_id", pa.string()), ("provider_id", pa.string()), ("credential_id", pa.string()),
    ("request_type", pa.string()), ("stream", pa.bool_()),
    ("input_tokens", pa.int32()), ("output_tokens", pa.int32()), ("total_tokens", pa.int32()),
    ("cache_read_tokens", pa.int32()), ("cache_write_tokens", pa.int32()),
    ("input_cost", pa.decimal128(12, 8)), ("output_cost", pa.decimal128(12, 8)), ("total_cost", pa.decimal128(12, 8)),
    ("markup_rate", pa.decimal128(5, 4)), ("relay_revenue", pa.decimal128(12, 8)), ("cost_micros", pa.int64()),
    ("started_at", _TS), ("first_token_at", _TS), ("completed_at", _TS), ("latency_ms", pa.int32()),
    ("ttft_ms", pa.int32()), ("status", pa.string()), ("error_code", pa.string()), ("error_message", pa.string()),
    ("http_status", pa.int32()), ("attempts", pa.int32()), ("cache_hit", pa.bool_()), ("cache_kind", pa.string()),
    ("cache_key", pa.string()), ("request_metadata", pa.string()), ("door", pa.string()),
    ("route_alias", pa.string()), ("route_target", pa.string()), ("route_reason", pa.string()),  # 0025
    ("guardrails", pa.string()),  # 0026
])  # fmt: skip
COLUMNS = tuple(SCHEMA.names)
_JSON = ("request_metadata", "guardrails")  # jsonb columns, kept as their JSON text

ROW_GROUP_ROWS = 128_000  # large enough for scans to skip by statistics, small enough to stream
COMPRESSION = "zstd"


def check_columns(columns: Iterable[str]) -> None:
    have, want = set(columns), set(COLUMNS)
    if have != want:
        raise ValueError(
            f"requests columns differ from the archive schema (missing {sorted(want - have)}, "
            f"unknown {sorted(have - want)}): update storage/archive/parquet.py"
        )


def _cell(name: str, value: Any) -> Any:
    if name in _JSON and value is not None and not isinstance(value, str):
        return orjson.dumps(value).decode()
    return value


def batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({n: [_cell(n, r[n]) for r in rows] for n in COLUMNS}, schema=SCHEMA)


class FileWriter:
    """One zstd Parquet file, fed row batches; row groups of ``ROW_GROUP_ROWS`` (blocking: run in a thread)."""

    def __init__(self, filesystem: pafs.FileSystem, full_path: str) -> None:
        self._writer = pq.ParquetWriter(full_path, SCHEMA, filesystem=filesystem, compression=COMPRESSION)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._pending.append(batch(rows))
        self._pending_rows += len(rows)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending), row_group_size=ROW_GROUP_ROWS)
            self.rows += self._pending_rows
            self._pending, self._pending_rows = [], 0

    def close(self) -> int:
        """Finish the file; returns the rows written."""
        self._flush()
        self._writer.close()
        return self.rows


class Checksum:
    """md5 over ``id:cost_micros,`` in id order: Postgres computes the same (storage/postgres/archive.py ``PG_CHECKSUM``)."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.rows = 0

    def add(self, request_id: str, cost_micros: int | None) -> None:
        self._md5.update(f"{request_id}:{'' if cost_micros is None else cost_micros},".encode())
        self.rows += 1

    def hexdigest(self) -> str:
        return self._md5.hexdigest()


def file_checksum(filesystem: pafs.FileSystem, full_path: str) -> tuple[int, str]:
    """(rows, checksum) of a written file, read back from storage."""
    table = pq.read_table(full_path, filesystem=filesystem, columns=["id", "cost_micros"])
    pairs = sorted(
        zip(table.column("id").to_pylist(), table.column("cost_micros").to_pylist()),
        key=lambda p: (p[0], p[1] is None, p[1] or 0),  # Postgres: ORDER BY id COLLATE "C", cost_micros (NULLs last)
    )
    check = Checksum()
    for request_id, cost in pairs:
        check.add(request_id, cost)
    return check.rows, check.hexdigest()


def row_from_arrow(record: dict[str, Any]) -> dict[str, Any]:
    """An archived row as the hot path returns it (JSON text back to a dict)."""
    for name in _JSON:
        raw = record.get(name)
        if isinstance(raw, str):
            record[name] = orjson.loads(raw)
    for name in ("input_cost", "output_cost", "total_cost", "relay_revenue", "markup_rate"):
        value = record.get(name)
        if value is not None and not isinstance(value, Decimal):
            record[name] = Decimal(str(value))
    return record
