"""Provider health against real Redis and Postgres: the shared circuit breaker,
its in-process fallback when Redis is gone, and the health monitor's probes,
status changes and health events."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.crypto.keyring import Keyring
from relay_server.pipeline.routing.candidates import CandidatePlanner, OutboundGuard
from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.providers.http_client import HttpClient
from relay_server.stack.processes import free_port
from relay_server.storage.postgres.credentials import PostgresCredentialSource
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import PostgresProviderStore
from relay_server.storage.redis.client import create_redis
from relay_server.storage.redis.health import RedisHealthStore, circuit_key
from relay_server.storage.redis.outbound import OutboundWindows
from relay_server.storage.redis.wire import RedisWire
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import PLATFORM
from relay_server.tenancy.vault import CredentialSpec, CredentialVault
from relay_server.workers.health_monitor import HealthMonitor
from tests.fakes import FakeOpenAI, Fault

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(redis: Redis, clock: Clock, threshold: int = 3) -> HealthTracker:
    return HealthTracker(RedisHealthStore(redis, clock=clock), CircuitPolicy(threshold, 30), clock=clock)


async def test_the_breaker_is_shared_by_every_worker(redis_client: Redis) -> None:
    clock = Clock()
    worker_a, worker_b = tracker(redis_client, clock), tracker(redis_client, clock)
    await worker_a.record("openai", "failure", 10)
    await worker_b.record("openai", "failure", 10)
    transition = await worker_a.record("openai", "failure", 10)
    assert transition is not None and transition.changed and transition.state == "open"
    assert (await worker_b.availability(["openai", "groq"])) == {"openai": "open", "groq": "closed"}

    clock.now += 31
    assert await worker_b.acquire_probe("openai")
    assert not await worker_a.acquire_probe("openai"), "one probe at a time across workers"
    transition = await worker_b.record("openai", "success", 10)
    assert transition is not None and transition.changed
    assert (await worker_a.availability(["openai"]))["openai"] == "closed"
    assert await redis_client.hget(circuit_key("openai"), "failures") == b"0"


async def test_the_attempt_window_is_shared_too(redis_client: Redis) -> None:
    clock = Clock()
    worker_a, worker_b = tracker(redis_client, clock), tracker(redis_client, clock)
    for ok, latency in [(True, 40), (True, 90), (False, 3000), (True, 150)]:
        await worker_a.record("openai", "success" if ok else "failure", latency)
    await worker_b.record("openai", "neutral", 20)
    await worker_a.close()  # samples are batched (flushed every second, and on shutdown)
    stats = await worker_b.window("openai")
    assert (stats.attempts, stats.errors, stats.p95_ms) == (5, 1, 3200)
    clock.now += 301
    assert (await worker_a.window("openai")).attempts == 0


async def test_with_redis_down_the_breaker_keeps_working_in_process() -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    clock = Clock()
    health = tracker(dead, clock, threshold=2)
    try:
        await health.record("openai", "failure", 10)
        await health.record("openai", "failure", 10)
        assert (await health.availability(["openai"]))["openai"] == "open"
        assert not await health.acquire_probe("openai")
        assert (await health.window("openai")).errors == 2
        assert await health.try_lead("monitor", "me", 1000)
    finally:
        await dead.aclose()



async def test_plan_time_reads_with_redis_down_use_this_workers_circuits_and_no_outbound_usage() -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    clock = Clock()
    health = tracker(dead, clock, threshold=2)
    dead_wire = RedisWire.from_url(f"redis://127.0.0.1:{free_port()}/0")
    planner = CandidatePlanner(
        None, None, None, health, OutboundGuard(OutboundWindows(dead)), None, state_reads=dead_wire,  # type: ignore[arg-type]
    )  # fmt: skip
    try:
        await health.record("openai", "failure", 10)
        await health.record("openai", "failure", 10)
        available, usage, latency = await planner._read_state(["openai", "anthropic"], {"openai": ["c1"], "anthropic": ["c2"]}, [])
        assert available == {"openai": "open", "anthropic": "closed"} and usage == {} and latency == {}
    finally:
        await dead.aclose()

async def test_the_monitor_lease_has_one_holder(redis_client: Redis) -> None:
    health = tracker(redis_client, Clock())
    assert await health.try_lead("provider-health-monitor", "worker-1", 5000)
    assert await health.try_lead("provider-health-monitor", "worker-1", 5000), "renewing one's own lease"
    assert not await health.try_lead("provider-health-monitor", "worker-2", 5000)


# --- the monitor -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest_asyncio.fixture
async def monitor(database: Database, redis_client: Redis, fake: FakeOpenAI) -> AsyncIterator[tuple[HealthMonitor, HealthTracker, Clock]]:
    keyring = Keyring.parse(base64.b64encode(os.urandom(32)).decode())
    assert keyring is not None
    async with database.system_tx() as conn:
        # Only openai takes part: the other providers have no key and no traffic.
        await conn.execute("UPDATE providers SET base_url = %s WHERE id = 'openai'", (fake.base_url,))
    await CredentialVault(database, keyring).create(Call(PLATFORM, "req_setup"), "", CredentialSpec("openai"), "sk-probe-1234")
    client = HttpClient.create()
    clock = Clock()
    health = tracker(redis_client, clock, threshold=3)
    directory = ProviderDirectory(PostgresProviderStore(database), client)
    await directory.load()
    source = PostgresCredentialSource(database)
    yield HealthMonitor(directory, health, PostgresProviderStore(database), source.pooled, keyring, owner="me"), health, clock
    await client.close()


async def _events(database: Database) -> list[dict]:
    async with database.system_tx() as conn:
        cur = await conn.execute(
            "SELECT status, error_rate, p95_ms, message FROM provider_health_events WHERE provider_id = 'openai' ORDER BY created_at, id"
        )
        return list(await cur.fetchall())


async def _status(database: Database, provider: str = "openai") -> str:
    async with database.system_tx() as conn:
        row = await (await conn.execute("SELECT status FROM providers WHERE id = %s", (provider,))).fetchone()
        return row["status"]


async def test_a_healthy_provider_is_probed_and_nothing_is_written(database: Database, monitor, fake: FakeOpenAI) -> None:
    mon, _, _ = monitor
    verdicts = {v.provider_id: v for v in await mon.run_once()}
    assert verdicts["openai"].health == "healthy" and not verdicts["openai"].changed
    probe = [r for r in fake.requests if r.path == "/v1/models"]
    assert len(probe) == 1 and probe[0].headers["authorization"] == "Bearer sk-probe-1234"
    assert await _events(database) == [] and await _status(database) == "active"
    assert "test" not in verdicts, "the in-process test provider is never probed"


async def test_failing_probes_take_a_provider_down_and_a_2xx_brings_it_back(database: Database, monitor, fake: FakeOpenAI) -> None:
    mon, health, clock = monitor
    fake.inject(*[Fault(status=503)] * 4)
    for _ in range(2):
        first = {v.provider_id: v for v in await mon.run_once()}["openai"]
        assert first.health == "healthy"  # the circuit is still closed (threshold 3)
    second = {v.provider_id: v for v in await mon.run_once()}["openai"]
    assert second.health == "down" and second.changed
    assert await _status(database) == "down"
    third = {v.provider_id: v for v in await mon.run_once()}["openai"]
    assert third.health == "down" and not third.changed, "an unchanged status writes no event"

    clock.now += 31
    back = {v.provider_id: v for v in await mon.run_once()}["openai"]
    assert back.health == "healthy" and back.changed
    assert (await health.availability(["openai"]))["openai"] == "closed"
    assert await _status(database) == "active"
    events = await _events(database)
    assert [e["status"] for e in events] == ["down", "healthy"]
    assert events[0]["error_rate"] == Decimal("1") and events[0]["p95_ms"] is not None and "503" in events[0]["message"]


async def test_a_high_error_rate_marks_the_provider_degraded(database: Database, monitor) -> None:
    mon, health, _ = monitor
    for outcome in ["failure", "failure", "success", "failure", "failure", "success", "failure"]:
        await health.record("openai", outcome, 100)  # type: ignore[arg-type]
    verdict = {v.provider_id: v for v in await mon.run_once()}["openai"]
    assert verdict.health == "degraded" and verdict.changed
    assert await _status(database) == "degraded"
    assert (await _events(database))[0]["message"].startswith("error rate")


async def test_an_operator_disabled_provider_stays_disabled(database: Database, monitor) -> None:
    _mon, _health, _ = monitor
    async with database.system_tx() as conn:
        await conn.execute("UPDATE providers SET status = 'disabled' WHERE id = 'openai'")
    changed = await PostgresProviderStore(database).record_status("openai", "down", error_rate=1.0, p95_ms=10, message="x")
    assert not changed and await _status(database) == "disabled"


async def test_only_the_lease_holder_runs_a_round(redis_client: Redis, monitor) -> None:
    mon, _, _ = monitor
    assert await redis_client.set("relay:lease:provider-health-monitor", "someone-else", px=60_000)
    assert await mon.tick() == []
    await redis_client.delete("relay:lease:provider-health-monitor")
    assert await mon.tick() != []


async def test_a_success_on_a_quiet_circuit_sends_nothing_but_one_after_failures_does(redis_client: Redis) -> None:
    clock = Clock()
    worker = tracker(redis_client, clock)
    assert (await worker.availability(["openai"]))["openai"] == "closed"
    await redis_client.hset(circuit_key("openai"), mapping={"state": "closed", "failures": 2})
    # Plan-time state said closed with no failures: the success is not sent (it would change nothing).
    await worker.record("openai", "success", 10)
    assert await redis_client.hget(circuit_key("openai"), "failures") == b"2"
    # Once this worker has seen failures, its next success resets the shared count.
    assert (await worker.availability(["openai"]))["openai"] == "closed"
    await worker.record("openai", "success", 10)
    assert await redis_client.hget(circuit_key("openai"), "failures") == b"0"


async def test_buffered_attempt_samples_reach_redis_on_flush(redis_client: Redis) -> None:
    clock = Clock()
    worker_a, worker_b = tracker(redis_client, clock), tracker(redis_client, clock)
    await worker_a.record("openai", "failure", 100)
    await worker_a.record("openai", "neutral", 100)
    assert (await worker_b.window("openai")).attempts == 0, "not flushed yet"
    await worker_a.flush()
    stats = await worker_b.window("openai")
    assert (stats.attempts, stats.errors) == (2, 1)
