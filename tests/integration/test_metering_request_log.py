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


async def test_a_row_postgres_cannot_store_is_stored_sanitised_and_bills(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    # Text Postgres refuses (NUL in text and jsonb): the row must still land, with its money intact.
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    spool = Spool(tmp_path)
    writer = RequestLogWriter(RequestLogStore(database), spool, flush_s=0.01)
    await writer.start()
    good = _row(tenant, key.key_id)
    poisoned = _row(tenant, key.key_id, end_user_id="u\x00ser", request_metadata={"a\x00": "b\x00c"},
                    error_message="x\x00" * 5000, input_tokens=11, output_tokens=7)  # fmt: skip
    writer.submit(good)
    writer.submit(poisoned)
    await writer.stop()
    rows = {r["id"]: r for r in await _rows(database, tenant)}
    assert set(rows) == {good.id, poisoned.id}
    kept = rows[poisoned.id]
    assert kept["cost_micros"] == 3 and kept["input_tokens"] == 11 and kept["output_tokens"] == 7
    assert kept["end_user_id"] == "u\ufffdser" and kept["request_metadata"] == {"a\ufffd": "b\ufffdc"}
    assert len(kept["error_message"]) <= 2000
    assert writer.sanitised == 1 and writer.dead == 0
    assert not (tmp_path / "requests.dead").exists()


async def test_spool_and_dead_letter_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append([{"id": "req_1"}])
    spool.dead_letter([{"id": "req_2"}])
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    files = list((tmp_path / "spool").iterdir())
    assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)


async def test_relay_spool_replay_writes_dead_letters_once_the_cause_is_fixed(
    database: Database, pg_db: TestDatabase, tmp_path: Path
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    spool = Spool(tmp_path)
    orphan = _row(tenant, "key_not_yet")  # refused: its key row does not exist (yet)
    stored = _row(tenant, key.key_id)
    spool.dead_letter([orphan.to_json(), stored.to_json()])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / f"requests-{gone.pid}-1.jsonl").write_bytes(orjson.dumps(_row(tenant, key.key_id).to_json()) + b"\n")
    env = {"DATABASE_URL": pg_db.owner_dsn, "PATH": "/usr/bin:/bin"}

    def replay() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay_server", "spool", "replay", "--dir", str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip

    first = replay()
    assert first.returncode == 1, first.stderr  # one row is still refused
    assert "2 row(s) written" in first.stdout and "1 still refused" in first.stdout
    [left] = [orjson.loads(line) for line in (tmp_path / "requests.dead").read_bytes().splitlines()]
    assert left["id"] == orphan.id
    async with database.system_tx() as conn:  # the operator fixes the cause: the key row appears
        await conn.execute("CREATE TEMP TABLE k AS SELECT * FROM api_keys WHERE id = %s", (key.key_id,))
        await conn.execute("UPDATE k SET id = 'key_not_yet', key_hash = md5(key_hash)")
        await conn.execute("INSERT INTO api_keys SELECT * FROM k")
    second = replay()
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    ids = {r["id"] for r in await _rows(database, tenant)}
    assert orphan.id in ids and stored.id in ids and len(ids) == 3
