"""The request-log writer against real Postgres: flush on shutdown, rows a
batch cannot take, and spools left behind by an earlier process."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from relay_server.ids import new_id
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.request_log import RequestLogStore, RequestLogWriter, RequestRow
from relay_server.storage.spool import Spool
from tests.support.metering import make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


def _row(tenant: str, key: str, **kw: object) -> RequestRow:
    now = datetime.now(UTC)
    base: dict[str, object] = dict(
        id=new_id("req"), created_at=now, tenant_id=tenant, api_key_id=key, environment="test", request_type="chat",
        stream=False, started_at=now, status="success", model_id="gpt-4o-mini", provider_id="test", cost_micros=3,
        requested_model="gpt-4o-mini",
    )  # fmt: skip
    base.update(kw)
    return RequestRow(**base)  # type: ignore[arg-type]


async def _rows(db: Database, tenant: str) -> list[dict]:
    async with db.system_tx() as conn:
        return list(await (await conn.execute("SELECT * FROM requests WHERE tenant_id = %s", (tenant,))).fetchall())


async def test_stop_writes_everything_still_queued(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    writer = RequestLogWriter(RequestLogStore(database), Spool(tmp_path), flush_s=5.0)  # would wait 5 s for a batch
    await writer.start()
    for _ in range(25):
        writer.submit(_row(tenant, key.key_id))
    await writer.stop()
    assert len(await _rows(database, tenant)) == 25 and writer.written == 25


async def test_a_bad_row_costs_neither_the_batch_nor_itself(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    spool = Spool(tmp_path)
    writer = RequestLogWriter(RequestLogStore(database), spool, flush_s=0.01)
    await writer.start()
    good = [_row(tenant, key.key_id) for _ in range(3)]
    unknown_model = _row(tenant, key.key_id, model_id="no-such-model", requested_model="no-such-model")
    unknown_key = _row(tenant, "key_gone")
    for row in (*good, unknown_model, unknown_key):
        writer.submit(row)
    await writer.stop()
    rows = {r["id"]: r for r in await _rows(database, tenant)}
    assert set(rows) == {r.id for r in good} | {unknown_model.id}
    kept = rows[unknown_model.id]
    assert kept["model_id"] is None and kept["requested_model"] == "no-such-model" and kept["cost_micros"] == 3
    assert writer.dead == 1
    [dead] = [orjson.loads(line) for line in (tmp_path / "requests.dead").read_bytes().splitlines()]
    assert dead["id"] == unknown_key.id
    assert not spool.pending()


async def test_a_spool_left_by_an_earlier_process_is_replayed_once(database: Database, pg_db: TestDatabase, tmp_path: Path) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    rows = [_row(tenant, key.key_id) for _ in range(7)]
    await RequestLogStore(database).insert(rows[:3])  # written before the crash, and spooled too (ambiguous commit)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    segment = tmp_path / f"requests-{gone.pid}-1.open"
    segment.write_bytes(b"".join(orjson.dumps(r.to_json()) + b"\n" for r in rows))

    writer = RequestLogWriter(RequestLogStore(database), Spool(tmp_path))
    assert await writer.replay() == 7  # what the writer's replay loop does at start-up
    assert await writer.replay() == 0
    logged = await _rows(database, tenant)
    assert sorted(r["id"] for r in logged) == sorted(r.id for r in rows)
    assert not Spool(tmp_path).pending()
