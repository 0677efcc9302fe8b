"""Provider events against real Redis and Postgres: the shared circuit breaker's transitions,
the monitor's failure bursts and the anomaly watcher's detections reach
``provider_health_events`` through the per-process buffer (no write on the request path),
once each, and are listed newest first with filters and cursor pages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from relay_server.catalog.provider_events import ProviderEventReader
from relay_server.domain.provider_events import ProviderEvent
from relay_server.errors import RelayError
from relay_server.observability.anomaly import AnomalyDetector, AnomalyWatcher
from relay_server.observability.provider_events import ProviderEventLog
from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.provider_events import PostgresProviderEvents
from relay_server.storage.redis.health import RedisHealthStore
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import PLATFORM, AdminPrincipal

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

OPERATOR = Call(PLATFORM, "req_test")


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def _rows(database: Database) -> list[dict]:
    async with database.system_tx() as conn:
        cur = await conn.execute(
            "SELECT provider_id, kind, signal, status, message FROM provider_health_events ORDER BY created_at, id"
        )
        return list(await cur.fetchall())


async def test_circuit_transitions_are_buffered_then_written_once(database: Database, redis_client: Redis) -> None:
    clock = Clock()
    events = ProviderEventLog(PostgresProviderEvents(database))
    store = RedisHealthStore(redis_client, clock=clock)
    # Two workers share the breaker; each has its own buffer, only the one that flips the circuit notes it.
    worker_a = HealthTracker(store, CircuitPolicy(3, 30), clock=clock, events=events)
    other_events = ProviderEventLog(PostgresProviderEvents(database))
    worker_b = HealthTracker(store, CircuitPolicy(3, 30), clock=clock, events=other_events)

    await worker_a.record("openai", "failure", 10)
    await worker_b.record("openai", "failure", 10)
    await worker_a.record("openai", "failure", 10)
    assert (await worker_b.availability(["openai"]))["openai"] == "open"
    assert events.pending == 1 and other_events.pending == 0
    assert await _rows(database) == [], "nothing is written on the request path"
    assert await events.flush() == 1

    clock.now += 31  # the cool-down is over: one probe at a time
    assert await worker_b.acquire_probe("openai")
    await worker_b.record("openai", "failure", 10)  # the probe fails: open again
    clock.now += 31
    assert await worker_a.acquire_probe("openai")
    await worker_a.record("openai", "success", 10)
    await events.flush()
    await other_events.flush()

    rows = await _rows(database)
    assert [r["kind"] for r in rows] == [
        "circuit_opened", "circuit_half_open", "circuit_opened", "circuit_half_open", "circuit_closed"
    ], rows
    assert rows[0]["message"] == "3 consecutive failures" and rows[0]["status"] is None
    assert "probe failed" in rows[2]["message"] and "probe succeeded" in rows[4]["message"]
    # Their buffered attempt samples would otherwise land in Redis a second later, inside the
    # next test's window (same fake clock, same provider).
    await worker_a.close()
    await worker_b.close()


async def test_a_failed_flush_keeps_the_events_and_a_full_buffer_drops_the_oldest(database: Database) -> None:
    class Down:
        async def insert(self, events: Iterable[ProviderEvent]) -> int:
            raise OSError("postgres is away")

    log = ProviderEventLog(Down(), max_buffered=3)
    for i in range(2):
        log.note("openai", "circuit_opened", f"event {i}")
    assert await log.flush() == 0 and log.pending == 2
    for i in range(2, 4):
        log.note("openai", "circuit_opened", f"event {i}")
    assert log.pending == 3 and log.dropped == 1
    log._store = PostgresProviderEvents(database)  # Postgres is back
    assert await log.flush() == 3
    assert [r["message"] for r in await _rows(database)] == ["event 1", "event 2", "event 3"]


def _fed_detector() -> AnomalyDetector:
    clock = Clock()
    detector = AnomalyDetector(window_s=60, baseline_s=600, min_samples=5, clock=clock)
    for _ in range(10):  # ten minutes of a steady 10 % error rate...
        for i in range(10):
            detector.observe("openai", 100.0, ok=i != 0)
        clock.now += 60
    for _ in range(10):  # ...then a minute of nothing but errors
        detector.observe("openai", 100.0, ok=False)
    return detector


async def test_anomalies_seen_by_several_workers_are_one_row_per_signal(database: Database) -> None:
    store = PostgresProviderEvents(database)
    for _ in range(2):  # two workers, each detecting on its own (identical) traffic
        log = ProviderEventLog(store)
        started = await AnomalyWatcher(_fed_detector(), None, None, log).check()
        assert [a.signal for a in started] == ["error_rate"]
        assert log.pending == 1
        await log.flush()
    rows = await _rows(database)
    assert [(r["kind"], r["signal"]) for r in rows] == [("anomaly", "error_rate")], rows
    assert rows[0]["message"].startswith("anomaly: error rate")


async def test_the_monitor_notes_a_failure_burst_once(database: Database, redis_client: Redis) -> None:
    from relay_server.workers.health_monitor import HealthMonitor

    clock = Clock()
    events = ProviderEventLog(PostgresProviderEvents(database))
    health = HealthTracker(RedisHealthStore(redis_client, clock=clock), CircuitPolicy(50, 30), clock=clock)

    class Directory:
        def routable_providers(self) -> list:
            from relay_server.storage.postgres.providers import ProviderRow

            return [ProviderRow("openai", "OpenAI", "openai", "http://x", "active", 1)]

        def provider(self, provider_id: str) -> None:
            return None

    class Statuses:
        async def record_status(self, *args: object, **kwargs: object) -> bool:
            return False

    async def pooled() -> list:
        return []

    monitor = HealthMonitor(Directory(), health, Statuses(), pooled, None, min_samples=5, events=events)  # type: ignore[arg-type]
    for outcome in ["failure", "failure", "success", "failure", "failure", "failure"]:
        await health.record("openai", outcome, 100)  # type: ignore[arg-type]
    await monitor.run_once()
    await monitor.run_once()  # the same burst: not noted again
    await events.flush()
    await health.close()
    rows = await _rows(database)
    assert [r["kind"] for r in rows] == ["failure_burst"]
    assert rows[0]["message"].startswith("5 of 6 attempts failed")


async def test_listing_filters_pages_and_is_for_operators_only(database: Database) -> None:
    store = PostgresProviderEvents(database)
    start = datetime.now(UTC) - timedelta(hours=2)
    batch = [
        ProviderEvent("openai", "circuit_opened", "5 consecutive failures", start),
        ProviderEvent("anthropic", "circuit_opened", "5 consecutive failures", start + timedelta(minutes=1)),
        ProviderEvent("openai", "circuit_closed", "an attempt succeeded", start + timedelta(hours=1)),
        ProviderEvent("no-such-provider", "circuit_opened", "dropped", start),
    ]
    assert await store.insert(batch) == 3, "an unknown provider's event is dropped, not an error"
    reader = ProviderEventReader(database)
    newest = await reader.events(OPERATOR, limit=10)
    assert [(e.provider_id, e.kind) for e in newest] == [
        ("openai", "circuit_closed"), ("anthropic", "circuit_opened"), ("openai", "circuit_opened")
    ]
    assert [e.kind for e in await reader.events(OPERATOR, provider_id="openai", limit=10)] == ["circuit_closed", "circuit_opened"]
    assert [e.provider_id for e in await reader.events(OPERATOR, kind="circuit_opened", limit=10)] == ["anthropic", "openai"]
    recent = await reader.events(OPERATOR, since=start + timedelta(minutes=30), limit=10)
    assert [e.kind for e in recent] == ["circuit_closed"]
    older = await reader.events(OPERATOR, until=start + timedelta(minutes=30), limit=10)
    assert len(older) == 2
    after = (newest[0].created_at, newest[0].id)
    assert [e.id for e in await reader.events(OPERATOR, after=after, limit=10)] == [e.id for e in newest[1:]]

    with pytest.raises(RelayError) as bad:
        await reader.events(OPERATOR, kind="meltdown", limit=10)
    assert bad.value.kind.value.http_status == 400 and bad.value.param == "kind"
    with pytest.raises(RelayError) as empty:
        await reader.events(OPERATOR, since=start, until=start, limit=10)
    assert empty.value.param == "start_time"
    member = Call(AdminPrincipal(kind="user", actor_id="usr_1", tenant_id="ten_demo", permissions=frozenset({"audit_log:read"})), "r")
    with pytest.raises(RelayError) as refused:
        await reader.events(member, limit=10)
    assert refused.value.kind.value.http_status == 403

    assert await store.purge(start + timedelta(minutes=30)) == 2
    assert [e.kind for e in await reader.events(OPERATOR, limit=10)] == ["circuit_closed"]
