"""The request log: one ``requests`` row per request, written off the hot path.

Requests hand finished rows to ``RequestLogWriter.submit`` (no I/O); a writer
task inserts them in batches (``INSERT … ON CONFLICT (id, created_at) DO
NOTHING``) together with the rollup marks of the days they touch.  When
Postgres cannot take a batch, the batch goes to the durable spool
(``storage/spool.py``) and later batches go straight there until a probe finds
Postgres back; then the spool is replayed.  ``created_at`` is the request's
start, fixed when the row is built, so a replayed row hits the same primary
key: zero rows lost, none duplicated.

A row Postgres refuses (a constraint, or text it cannot store) must still be
billed: it is retried without its catalog references, then *sanitised*
(text made storable, metadata cleaned; tokens and costs untouched), which is
logged as an error and counted (``relay_request_log_rows{result="sanitised"}``).
Only a row refused even then goes to the dead-letter file, which the
operator replays with ``relay spool replay`` once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json
from psycopg_pool import PoolTimeout

from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.silos import DataPlane
from relay_server.storage.spool import Spool

log = logging.getLogger(__name__)


# No __slots__: orjson encodes a dataclass that has a __dict__ straight from it, about twice as fast
# as one it must read attribute by attribute (a chat request's row: ≈ 1.6 µs against 3.2).
@dataclass(frozen=True)
class RequestRow:
    """Every column of ``requests`` (migration 0005)."""

    id: str
    created_at: datetime
    tenant_id: str
    api_key_id: str
    environment: str
    request_type: str
    stream: bool
    started_at: datetime
    status: str
    end_user_id: str | None = None
    requested_model: str | None = None
    model_id: str | None = None
    provider_id: str | None = None
    credential_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    input_cost: Decimal | None = None
    output_cost: Decimal | None = None
    total_cost: Decimal | None = None
    markup_rate: Decimal = Decimal("0.20")
    relay_revenue: Decimal | None = None
    cost_micros: int | None = None
    first_token_at: datetime | None = None
    completed_at: datetime | None = None
    latency_ms: int | None = None
    ttft_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    attempts: int = 1
    cache_hit: bool = False
    cache_kind: str | None = None
    cache_key: str | None = None
    request_metadata: dict[str, Any] | None = None
    door: str = "openai"
    route_alias: str | None = None  # the virtual model asked for (migration 0025)
    route_target: str | None = None  # model@provider that answered
    route_reason: str | None = None
    guardrails: list[dict[str, Any]] | None = None
    """Guardrail decisions: [{"guardrail", "stage", "action", "count"}] (docs/guardrails.md)."""

    def to_json(self) -> dict[str, Any]:
        """Spool form: Decimals as strings, datetimes as ISO 8601 (exact round trip)."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRow:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if value is not None and f.name in _DECIMALS:
                value = Decimal(value)
            elif value is not None and f.name in _DATETIMES:
                value = datetime.fromisoformat(value)
            values[f.name] = value
        return cls(**values)

    def without_references(self) -> RequestRow:
        """The row with its optional catalog references cleared (requested_model keeps the name)."""
        return _replace(self, model_id=None, provider_id=None, credential_id=None)

    def sanitised(self) -> RequestRow:
        """The row with every text storable: no NUL, no lone surrogate, bounded length.

        Money and token columns are never touched: the point is that the row bills.
        """
        changes: dict[str, Any] = {f.name: _storable(getattr(self, f.name), _TEXT_LIMIT)
                                   for f in fields(self) if isinstance(getattr(self, f.name), str)}  # fmt: skip
        if self.request_metadata is not None:
            changes["request_metadata"] = {
                _storable(str(k), 64): _storable(v, 512) if isinstance(v, str) else v
                for k, v in self.request_metadata.items()
            }
        return _replace(self, **changes)


_TEXT_LIMIT = 2000


def _storable(text: str, limit: int) -> str:
    # Postgres text and jsonb refuse U+0000; UTF-8 cannot encode a lone surrogate.
    clean = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return clean[:limit]


def _replace(row: RequestRow, **changes: Any) -> RequestRow:
    data = {f.name: getattr(row, f.name) for f in fields(row)}
    data.update(changes)
    return RequestRow(**data)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRow))
_DECIMALS = {"input_cost", "output_cost", "total_cost", "markup_rate", "relay_revenue"}
_DATETIMES = {"created_at", "started_at", "first_token_at", "completed_at"}

# One statement per database and batch: the rows travel as ONE json parameter (orjson encodes the
# frozen dataclasses natively, in C), Postgres expands them with json_populate_recordset into
# ``requests``' own column types, and the marks are derived from the same rows.  One round trip, no
# BEGIN/COMMIT (a statement is its own transaction), no per-row Python in psycopg, nothing left on
# the session (PgBouncer's transaction pooling is fine).  Semantics as an executemany of single-row
# inserts had them:
# * ON CONFLICT DO NOTHING also skips a key repeated inside the batch (the first one wins: the
#   function returns the array in order);
# * the marks are upserted only once every row is in (they read ``written``'s count), in the order
#   Python's ``sorted`` gave them before (code-point order = COLLATE "C"), so writers still lock
#   marks in one order; DO UPDATE (not NOTHING) keeps each mark locked until this statement
#   commits: the rollup worker skips locked marks, so it never recomputes a day without these rows.
_WRITE = f"""
WITH batch AS MATERIALIZED (SELECT * FROM json_populate_recordset(NULL::requests, %s)),
written AS (
    INSERT INTO requests ({", ".join(COLUMNS)}) SELECT {", ".join(COLUMNS)} FROM batch
    ON CONFLICT (id, created_at) DO NOTHING
    RETURNING 1
)
INSERT INTO usage_rollup_pending (tenant_id, date, environment)
SELECT tenant_id, date, environment FROM (
    SELECT DISTINCT tenant_id, (created_at AT TIME ZONE 'UTC')::date AS date, environment FROM batch
     WHERE (SELECT count(*) FROM written) >= 0
) marks
ORDER BY tenant_id COLLATE "C", date, environment COLLATE "C"
ON CONFLICT (tenant_id, date, environment) DO UPDATE SET marked_at = now()
"""


def _money(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact: numeric's input parses it digit for digit
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_rows(rows: list[RequestRow]) -> bytes:
    """The batch as a JSON array of row objects (key = column): what ``_WRITE`` expands.

    Datetimes go as RFC 3339 with their offset (microseconds kept), Decimals as strings, None as
    null (SQL NULL, also for the jsonb columns), dict keys that are not strings as strings (as
    every Jsonb parameter, storage/postgres/pool.py).  A row orjson cannot encode (a lone
    surrogate, an integer beyond 64 bits) is refused like a row Postgres refuses, so it takes the
    repair path.
    """
    try:
        return orjson.dumps(rows, default=_money, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        raise psycopg.DataError(f"request log row cannot be encoded: {exc}") from exc


def _as_is(payload: Any) -> Any:
    return payload  # already JSON (encode_rows)


_POLL_S = 0.05
# Postgres unreachable, restarting, or too slow: the batch goes to the spool.
TRANSIENT = (psycopg.OperationalError, PoolTimeout, OSError, asyncio.TimeoutError)
# The row itself is refused (checked BEFORE TRANSIENT: ProgramLimitExceeded, e.g. an
# index entry too large, is an OperationalError, yet retrying the same row never helps).
REJECTED = (psycopg.IntegrityError, psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError)


class RequestLogStore:
    """The SQL of the request log; used by the writer and by replays."""

    def __init__(self, db: Database | DataPlane, *, timeout_s: float = 5.0) -> None:
        self._plane = DataPlane.of(db)
        self._timeout = timeout_s

    async def insert(self, rows: list[RequestRow]) -> None:
        """Per database: one transaction with the rows (duplicates ignored) and the rollup marks of their days.

        Each row goes where its tenant's placement says *now*, so rows queued
        before a move to a silo are written to the silo once the move switched.
        """
        groups = await self._plane.group(r.tenant_id for r in rows)
        if len(groups) == 1:  # the usual case: one database
            [db] = groups
            await self._insert(db, rows)
            return
        for db, tenants in groups.items():
            mine = set(tenants)
            await self._insert(db, [r for r in rows if r.tenant_id in mine])

    async def _insert(self, db: Database, rows: list[RequestRow]) -> None:
        payload = Json(encode_rows(rows), dumps=_as_is)  # encoded before a connection is held
        async with asyncio.timeout(self._timeout * 3):  # no task per batch, unlike wait_for
            async with db.system.connection(timeout=self._timeout) as conn:
                await conn.execute(_WRITE, (payload,))

    async def ping(self) -> None:
        async def run() -> None:
            async with self._plane.pool.system.connection(timeout=self._timeout) as conn:
                await conn.execute("SELECT 1")

        await asyncio.wait_for(run(), timeout=self._timeout * 2)


async def insert_row_repaired(store: RequestLogStore, row: RequestRow) -> tuple[str, BaseException | None]:
    """Insert one row, repairing it as far as needed: ``written`` | ``sanitised`` | ``rejected``.

    Transient failures propagate (the caller spools or retries the row).
    """
    error: BaseException | None = None
    for outcome, candidate in (("written", row), ("written", row.without_references())):
        try:
            await store.insert([candidate])
            return outcome, None
        except REJECTED as exc:
            error = exc
    clean = row.sanitised()
    for candidate in (clean, clean.without_references()):
        try:
            await store.insert([candidate])
        except REJECTED as exc:
            error = exc
            continue
        # An alert: some input reached the log that validation should have refused.
        log.error("request log row stored sanitised", extra={"request_id": row.id, "error": repr(error)})
        return "sanitised", error
    return "rejected", error


class RequestLogWriter:
    def __init__(
        self,
        store: RequestLogStore,
        spool: Spool,
        *,
        batch_size: int = 500,
        flush_s: float = 0.2,
        replay_s: float = 2.0,
    ) -> None:
        self._store = store
        self._spool = spool
        self._batch = batch_size
        self._flush_s = flush_s
        self._replay_s = replay_s
        self._queue: asyncio.Queue[RequestRow] = asyncio.Queue()
        self._healthy = True
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.sanitised = 0
        self.dead = 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    def submit(self, row: RequestRow) -> None:
        """Hand a row over; never blocks, never raises."""
        self._queue.put_nowait(row)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_forever(), name="request-log-writer"),
            loop.create_task(self._replay_forever(), name="request-log-replay"),
        ]

    async def flush(self) -> None:
        """Wait until every submitted row is in Postgres or in the spool."""
        await self._queue.join()

    async def stop(self) -> None:
        """Graceful shutdown: write (or spool) everything submitted, then stop."""
        self._stopping = True
        if not self._tasks:  # never started: write what was submitted here
            batch = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            if batch:
                await self._write(batch)
                for _ in batch:
                    self._queue.task_done()
        await self.flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await asyncio.to_thread(self._spool.close_segment)

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self._flush_s
            while len(batch) < self._batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or self._stopping:
                    break
                try:  # short waits, so that stop() never waits for a whole flush interval
                    batch.append(await asyncio.wait_for(self._queue.get(), min(remaining, _POLL_S)))
                except TimeoutError:
                    continue
            try:
                await self._write(batch)
            except Exception:  # the spool itself failed (disk full?): keep the rows in memory and retry
                log.exception("request log batch could not be written or spooled; retrying")
                await asyncio.sleep(1.0)
                for row in batch:
                    self._queue.put_nowait(row)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[RequestRow]) -> None:
        if self._healthy:
            try:
                await self._store.insert(batch)
                self.written += len(batch)
                return
            except REJECTED:
                await self._write_one_by_one(batch)
                return
            except TRANSIENT as exc:
                self._healthy = False
                log.warning("request log: Postgres unavailable, spooling", extra={"rows": len(batch), "error": repr(exc)})
        await asyncio.to_thread(self._spool.append, [r.to_json() for r in batch])
        self.spooled += len(batch)

    async def _write_one_by_one(self, batch: list[RequestRow]) -> None:
        """A batch with a bad row: write the others, then the bad ones without references, then sanitised."""
        for row in batch:
            outcome, error = await insert_row_repaired(self._store, row)
            if outcome == "written":
                self.written += 1
            elif outcome == "sanitised":
                self.written += 1
                self.sanitised += 1
            else:
                self.dead += 1
                log.error("request log row rejected; kept in the dead-letter file", extra={"request_id": row.id, "error": repr(error)})
                await asyncio.to_thread(self._spool.dead_letter, [row.to_json()])

    async def _replay_forever(self) -> None:
        while True:
            try:
                await self.replay()
            except Exception:
                log.exception("request log replay failed; will retry")
            await asyncio.sleep(self._replay_s)

    async def replay(self) -> int:
        """If Postgres answers, mark it healthy and write every spooled row; returns rows replayed."""
        if not self._healthy or await asyncio.to_thread(self._spool.pending):
            try:
                await self._store.ping()
            except TRANSIENT:
                self._healthy = False
                return 0
            if not self._healthy:
                log.info("request log: Postgres is back")
            self._healthy = True
        if not await asyncio.to_thread(self._spool.pending):
            return 0
        replayed = 0
        for path in await asyncio.to_thread(self._spool.claim):
            rows = [RequestRow.from_json(r) for r in await asyncio.to_thread(self._spool.read, path)]
            try:
                for start in range(0, len(rows), self._batch):
                    chunk = rows[start : start + self._batch]
                    try:
                        await self._store.insert(chunk)
                    except REJECTED:
                        await self._write_one_by_one(chunk)
            except TRANSIENT:
                self._healthy = False
                await asyncio.to_thread(self._spool.release, path)
                return replayed
            except BaseException:
                await asyncio.to_thread(self._spool.release, path)
                raise
            await asyncio.to_thread(self._spool.done, path)
            replayed += len(rows)
            self.replayed += len(rows)
        if replayed:
            log.info("request log: spooled rows replayed", extra={"rows": replayed})
        return replayed
