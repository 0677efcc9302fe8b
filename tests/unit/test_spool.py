"""The durable spool and the request-row form it stores.  Local files only."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from relay_server.storage.postgres.request_log import COLUMNS, RequestRow, encode_rows
from relay_server.storage.spool import Spool
from relay_server.workers.webhooks import derived_secret, sign, verify


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_appended_batches_are_replayed_then_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert not spool.pending()
    spool.append([{"n": 1}, {"n": 2}])
    spool.append([{"n": 3}])
    spool.append([])
    assert spool.pending()
    [segment] = spool.claim()
    assert segment.name.endswith(f".claimed-{os.getpid()}")
    assert spool.read(segment) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert spool.claim() == []  # claimed segments are not claimed twice
    spool.done(segment)
    assert not spool.pending()


def test_a_released_segment_is_claimed_again_and_new_writes_go_to_a_new_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"n": 1}])
    [segment] = spool.claim()
    spool.append([{"n": 2}])  # while the first one is being replayed
    spool.release(segment)
    claimed = spool.claim()
    assert sorted(r["n"] for path in claimed for r in spool.read(path)) == [1, 2]


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"n": 1}])
    spool.close_segment()
    [closed] = list(tmp_path.glob("*.jsonl"))
    with closed.open("ab") as f:
        f.write(b'{"n": 2, "trunc')
    [segment] = spool.claim()
    assert spool.read(segment) == [{"n": 1}]


def test_segments_of_dead_processes_are_taken_over_live_ones_are_not(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f"requests-{dead}-1.open").write_bytes(b'{"n": 1}\n')
    (tmp_path / f"requests-{dead}-2.jsonl.claimed-{dead}").write_bytes(b'{"n": 2}\n')
    (tmp_path / f"requests-{alive}-1.open").write_bytes(b'{"n": 3}\n')  # still being written
    (tmp_path / f"requests-{alive}-2.jsonl.claimed-{alive}").write_bytes(b'{"n": 4}\n')  # being replayed
    (tmp_path / "requests.dead").write_bytes(b'{"n": 5}\n')
    (tmp_path / "unrelated.txt").write_text("x")
    spool = Spool(tmp_path)
    claimed = spool.claim()
    assert sorted(r["n"] for path in claimed for r in spool.read(path)) == [1, 2]


def test_dead_letters_are_kept_apart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.dead_letter([{"id": "req_1"}])
    assert path.read_bytes() == b'{"id":"req_1"}\n' and not spool.pending()


def test_spool_names_are_restricted(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path, name="../x")


def test_a_request_row_survives_the_spool_exactly() -> None:
    started = datetime(2026, 1, 15, 12, 0, 0, 123456, tzinfo=UTC)
    row = RequestRow(
        id="req_1", created_at=started, tenant_id="ten_a", api_key_id="key_a", environment="live", request_type="chat",
        stream=True, started_at=started, status="cancelled", input_cost=Decimal("0.00000150"),
        total_cost=Decimal("0.00000451"), markup_rate=Decimal("0.1500"), cost_micros=5,
        first_token_at=started + timedelta(milliseconds=7), request_metadata={"usage_source": "estimate"},
    )  # fmt: skip
    again = RequestRow.from_json(row.to_json())
    assert again == row
    assert again.created_at.utcoffset() == timedelta(0) and again.total_cost == Decimal("0.00000451")
    [encoded] = orjson.loads(encode_rows([row]))  # what the store sends: every column, by name
    assert list(encoded) == list(COLUMNS) and len(COLUMNS) == 42  # + route_*, (0025), guardrails (0026)
    assert row.without_references().model_id is None and row.without_references().requested_model == row.requested_model


def test_webhook_signatures() -> None:
    body = b'{"id":"evt"}'
    header = sign("s3cret", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body, now=1_700_000_400)  # too old: a replay
    assert not verify("s3cret", "v1=abc", body) and not verify("s3cret", "t=x,v1=abc", body)
    assert derived_secret("k", "ten_a") != derived_secret("k", "ten_b") == derived_secret("k", "ten_b")


def test_nothing_is_created_until_something_is_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool" / "db1")
    assert not spool.pending() and spool.claim() == []
    assert not (tmp_path / "spool").exists()
    spool.append([{"n": 1}])
    assert spool.pending()
