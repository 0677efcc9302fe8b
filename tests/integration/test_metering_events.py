"""Events: the 80% spend-cap warning (recorded, delivered to the tenant's
webhook with an HMAC signature, retried with backoff) and noisy-neighbour
flagging (limits tightened, an audit row with actor_type system)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from redis.asyncio import Redis

from relay_server.pipeline.steps.noisy import NoisyNeighbours
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.webhooks import PostgresEvents, WebhookStore
from relay_server.storage.redis.limits import noisy_key
from relay_server.workers.webhooks import SIGNATURE_HEADER, WebhookDispatcher, verify
from tests.support.metering import Harness, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

SECRET = "whsec_test_0123456789"


class Receiver:
    """A tenant's webhook endpoint: records what it got, answers with ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.status)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.url = f"http://127.0.0.1:{port}/hook"
    yield recv
    await runner.cleanup()


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await build_harness(database, redis_client, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    yield h
    await h.close()


async def _rows(db: Database, query: str, *params: object) -> list[dict[str, Any]]:
    async with db.system_tx() as conn:
        return list(await (await conn.execute(query, params)).fetchall())


async def test_crossing_80_percent_of_a_cap_is_recorded_once_and_delivered_signed(
    harness: Harness, database: Database, receiver: Receiver, pg_db: TestDatabase
) -> None:
    tenant = make_tenant(pg_db.owner_dsn, config={"webhook_url": receiver.url, "webhook_secret": SECRET})
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=500, cap_window="daily")
    for _ in range(40):
        await harness.chat(key, max_tokens=40)
    spent = sum(r["cost_micros"] or 0 for r in await harness.rows(tenant))
    assert spent >= 400

    audit = await _rows(database, "SELECT * FROM audit_log WHERE tenant_id = %s AND action = 'spend_cap.warning'", tenant)
    assert len(audit) == 1 and audit[0]["actor_type"] == "system" and audit[0]["resource_id"] == key.key_id
    deliveries = await _rows(database, "SELECT * FROM webhook_deliveries WHERE tenant_id = %s", tenant)
    assert len(deliveries) == 1 and deliveries[0]["status"] == "pending"

    dispatcher = WebhookDispatcher(WebhookStore(database), allow_private=True)  # the receiver is on loopback
    try:
        assert await dispatcher.run_once() == 1
        assert await dispatcher.run_once() == 0
    finally:
        await dispatcher.close()
    [(headers, body)] = receiver.received
    assert verify(SECRET, headers[SIGNATURE_HEADER], body)
    assert not verify("another secret", headers[SIGNATURE_HEADER], body)
    assert not verify(SECRET, headers[SIGNATURE_HEADER], body + b" ")
    event = json.loads(body)
    assert event["type"] == "spend_cap.warning" and headers["x-relay-event-id"] == event["id"]
    assert event["data"]["key_id"] == key.key_id and event["data"]["cap_micros"] == 500
    assert 400 <= event["data"]["spent_micros"] <= 500
    [delivered] = await _rows(database, "SELECT * FROM webhook_deliveries WHERE tenant_id = %s", tenant)
    assert delivered["status"] == "delivered" and delivered["last_status_code"] == 200


async def test_failed_deliveries_back_off_then_die(database: Database, receiver: Receiver, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn, config={"webhook_url": receiver.url, "webhook_secret": SECRET})
    events = PostgresEvents(database)
    await events.emit(tenant, "spend_cap.warning", "evt-1", {"n": 1})
    await events.emit(tenant, "spend_cap.warning", "evt-1", {"n": 1})  # raised twice: recorded once
    receiver.status = 500
    dispatcher = WebhookDispatcher(WebhookStore(database), max_attempts=2, allow_private=True)
    try:
        assert await dispatcher.run_once() == 1
        [row] = await _rows(database, "SELECT *, next_attempt_at > now() AS later FROM webhook_deliveries WHERE tenant_id = %s", tenant)
        assert (row["status"], row["attempts"], row["last_status_code"], row["later"]) == ("failed", 1, 500, True)
        assert await dispatcher.run_once() == 0  # not due yet
        async with database.system_tx() as conn:
            await conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE tenant_id = %s", (tenant,))
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.close()
    [row] = await _rows(database, "SELECT * FROM webhook_deliveries WHERE tenant_id = %s", tenant)
    assert (row["status"], row["attempts"]) == ("dead", 2)
    assert len(receiver.received) == 2
    assert len(await _rows(database, "SELECT * FROM audit_log WHERE tenant_id = %s", tenant)) == 1


async def test_events_without_a_webhook_are_only_audited(database: Database, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    await PostgresEvents(database).emit(tenant, "spend_cap.warning", "evt-2", {"key_id": None})
    assert len(await _rows(database, "SELECT * FROM audit_log WHERE tenant_id = %s", tenant)) == 1
    assert await _rows(database, "SELECT * FROM webhook_deliveries WHERE tenant_id = %s", tenant) == []


async def test_a_tenant_taking_most_of_the_traffic_is_flagged_once(
    database: Database, redis_client: Redis, pg_db: TestDatabase
) -> None:
    loud, quiet = make_tenant(pg_db.owner_dsn), make_tenant(pg_db.owner_dsn)
    detector = NoisyNeighbours(redis_client, PostgresEvents(database), threshold=0.5, min_requests=100, duration_s=60)
    for _ in range(150):
        detector.note(loud)
    for _ in range(50):
        detector.note(quiet)
    await detector.flush()
    assert await detector.shares() == (200, {loud: 150, quiet: 50})
    assert await detector.evaluate() == [loud]
    assert await redis_client.get(noisy_key(loud)) == b"500"
    assert 0 < await redis_client.ttl(noisy_key(loud)) <= 60
    assert await redis_client.get(noisy_key(quiet)) is None
    await redis_client.delete("relay:traffic:evaluator")
    assert await detector.evaluate() == []  # still flagged: no second event
    [row] = await _rows(database, "SELECT * FROM audit_log WHERE tenant_id = %s", loud)
    assert row["actor_type"] == "system" and row["action"] == "tenant.rate_limits_tightened"
    assert row["metadata"]["share"] == "0.750"


async def test_no_flag_below_the_minimum_volume_or_for_a_lone_tenant(redis_client: Redis) -> None:
    detector = NoisyNeighbours(redis_client, None, threshold=0.5, min_requests=100)
    for _ in range(90):
        detector.note("ten_a")
    detector.note("ten_b")
    await detector.flush()
    assert await detector.evaluate() == []
    await redis_client.flushdb()
    for _ in range(500):
        detector.note("ten_alone")
    await detector.flush()
    assert await detector.evaluate() == []
