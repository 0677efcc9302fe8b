"""The request log's batch write against real Postgres: one statement carries a whole batch as JSON,
so what the per-row inserts guaranteed must still hold — every column stored exactly, repeated rows
ignored (first one wins), marks for the rows' UTC days in the same transaction, and a row that
cannot be sent still reaching the repair path."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from relay_server.ids import new_id
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.request_log import (
    COLUMNS,
    REJECTED,
    RequestLogStore,
    RequestLogWriter,
    RequestRow,
)
from relay_server.storage.spool import Spool
from tests.support.metering import make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


def _row(tenant: str, key: str, **kw: object) -> RequestRow:
    now = datetime.now(UTC)
    base: dict[str, object] = dict(
        id=new_id("req"), created_at=now, tenant_id=tenant, api_key_id=key, environment="live", request_type="chat",
        stream=False, started_at=now, status="success", model_id="gpt-4o-mini", provider_id="test", cost_micros=3,
        requested_model="gpt-4o-mini",
    )  # fmt: skip
    base.update(kw)
    return RequestRow(**base)  # type: ignore[arg-type]


async def _stored(db: Database, tenant: str) -> dict[str, RequestRow]:
    async with db.system_tx() as conn:
        cur = await conn.execute(f"SELECT {', '.join(COLUMNS)} FROM requests WHERE tenant_id = %s", (tenant,))
        return {r["id"]: RequestRow(**r) for r in await cur.fetchall()}


async def _marks(db: Database, tenant: str) -> set[tuple[date, str]]:
    async with db.system_tx() as conn:
        cur = await conn.execute("SELECT date, environment FROM usage_rollup_pending WHERE tenant_id = %s", (tenant,))
        return {(r["date"], r["environment"]) for r in await cur.fetchall()}


async def test_every_column_round_trips_exactly(database: Database, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant).key_id
    india = timezone(timedelta(hours=5, minutes=30))
    started = datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=india)
    odd = "é漢字🙂 \u2028\u200b\u202e 'quoted' \"double\" \\back\\ \t\n\u007f\ufffd"
    full = _row(
        tenant, key, created_at=started, started_at=started, environment="test", request_type="embedding", stream=True,
        status="error", end_user_id=odd, requested_model="gpt-4o-mini@openai", model_id="gpt-4o-mini",
        provider_id="openai", input_tokens=2**31 - 1, output_tokens=0, total_tokens=2**31 - 1, cache_read_tokens=7,
        cache_write_tokens=8, input_cost=Decimal("1234.12345678"), output_cost=Decimal("0.00000001"),
        total_cost=Decimal("1234.12345679"), markup_rate=Decimal("0.1234"), relay_revenue=Decimal("-0.00000150"),
        cost_micros=2**53 + 1, first_token_at=started + timedelta(microseconds=1),
        completed_at=started + timedelta(days=1, microseconds=7), latency_ms=86_400_000, ttft_ms=0,
        error_code="upstream_error", error_message=odd * 40, http_status=502, attempts=0, cache_hit=True,
        cache_kind="semantic", cache_key="ck_" + "f" * 64,
        request_metadata={"team": odd, "nested": {"list": [1, 2.5, None, True, "x"]}, "empty": {}, "n": -12},
        door="anthropic", route_alias="smart", route_target="gpt-4o-mini@openai", route_reason="fallback: 429",
        guardrails=[{"guardrail": "pii", "stage": "input", "action": "redact", "count": 2}],
    )  # fmt: skip
    sparse = RequestRow(
        id=new_id("req"), created_at=datetime.now(UTC), tenant_id=tenant, api_key_id=key, environment="live",
        request_type="chat", stream=False, started_at=datetime.now(UTC), status="timeout",
    )  # fmt: skip
    await RequestLogStore(database).insert([full, sparse])
    stored = await _stored(database, tenant)
    assert stored[full.id] == full  # Decimals, instants (offset aside), JSON, text: equal field by field
    assert stored[sparse.id] == sparse  # every optional column NULL (JSON null is not stored as jsonb 'null')
    assert str(stored[full.id].input_cost) == "1234.12345678" and str(stored[full.id].relay_revenue) == "-0.00000150"
    assert stored[full.id].created_at.microsecond == 999999
    # The jsonb columns keep non-string keys as strings, as every Jsonb parameter does.
    await RequestLogStore(database).insert([_row(tenant, key, id="req_intkey", request_metadata={7: "seven"})])
    assert (await _stored(database, tenant))["req_intkey"].request_metadata == {"7": "seven"}


async def test_repeated_rows_are_ignored_within_and_across_batches(database: Database, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant).key_id
    store = RequestLogStore(database)
    a, b, c = (_row(tenant, key, cost_micros=n) for n in (1, 2, 3))
    a_again = dataclasses.replace(a, cost_micros=999, status="error")  # same (id, created_at): a replay, not a row
    await store.insert([a, a_again, b, b])
    await store.insert([a_again, c, b])
    stored = await _stored(database, tenant)
    assert sorted(stored) == sorted(r.id for r in (a, b, c))
    assert stored[a.id] == a  # the first copy in the batch wins, later ones change nothing
    # The same id at another instant is another row (the key is (id, created_at), as before).
    later = dataclasses.replace(a, created_at=a.created_at + timedelta(seconds=1))
    await store.insert([later])
    async with database.system_tx() as conn:
        n = await (await conn.execute("SELECT count(*) AS n FROM requests WHERE id = %s", (a.id,))).fetchone()
    assert n is not None and n["n"] == 2


async def test_marks_are_the_rows_utc_days_and_share_their_transaction(database: Database, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant).key_id
    store = RequestLogStore(database)
    new_york = timezone(timedelta(hours=-5))
    late = datetime(2026, 2, 10, 23, 30, tzinfo=new_york)  # already 11 February in UTC
    rows = [
        _row(tenant, key, created_at=late, started_at=late),
        _row(tenant, key, created_at=late, started_at=late, environment="test"),
        _row(tenant, key, created_at=late + timedelta(minutes=1), started_at=late),
    ]
    await store.insert(rows)
    assert await _marks(database, tenant) == {(date(2026, 2, 11), "live"), (date(2026, 2, 11), "test")}

    async with database.system_tx() as conn:  # the rollup worker took the marks
        await conn.execute("DELETE FROM usage_rollup_pending WHERE tenant_id = %s", (tenant,))
    await store.insert(rows[:1])  # a replay of a stored row still marks its day (as the per-row inserts did)
    assert await _marks(database, tenant) == {(date(2026, 2, 11), "live")}

    # A batch Postgres refuses leaves nothing behind: neither its good rows nor their marks.
    async with database.system_tx() as conn:
        await conn.execute("DELETE FROM usage_rollup_pending WHERE tenant_id = %s", (tenant,))
    good = _row(tenant, key, created_at=late - timedelta(days=3), started_at=late)
    with pytest.raises(REJECTED):
        await store.insert([good, _row(tenant, "key_gone")])
    assert good.id not in await _stored(database, tenant) and await _marks(database, tenant) == set()


async def test_a_row_that_cannot_be_encoded_is_repaired_and_bills(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    # A lone surrogate cannot be UTF-8: the batch is refused like a row Postgres refuses
    # (REJECTED), the others are written one by one, and this one lands sanitised.
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant).key_id
    poisoned = _row(tenant, key, end_user_id="u\ud800ser", request_metadata={"k\udfff": "v\ud800"}, cost_micros=42)
    with pytest.raises(psycopg.DataError):
        await RequestLogStore(database).insert([poisoned])
    writer = RequestLogWriter(RequestLogStore(database), Spool(tmp_path), flush_s=0.01)
    await writer.start()
    good = [_row(tenant, key) for _ in range(3)]
    for row in (good[0], poisoned, *good[1:]):
        writer.submit(row)
    await writer.stop()
    stored = await _stored(database, tenant)
    assert set(stored) == {poisoned.id} | {r.id for r in good}
    kept = stored[poisoned.id]
    assert kept.cost_micros == 42 and kept.end_user_id == "u?ser" and kept.request_metadata == {"k?": "v?"}
    assert writer.sanitised == 1 and writer.dead == 0 and writer.written == 4
