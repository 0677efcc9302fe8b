"""The circuit breaker's rules, in process memory (the Redis twin is tested in
tests/integration/test_health.py against the same expectations)."""

from __future__ import annotations

import pytest

from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker, LocalHealth, availability
from relay_server.storage.redis.health import CircuitState, latency_bin, p95_from_bins


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock, threshold: int = 3, cooldown_s: float = 30.0) -> HealthTracker:
    return HealthTracker(None, CircuitPolicy(threshold, cooldown_s), clock=clock)


@pytest.mark.asyncio
async def test_the_circuit_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    health = tracker(clock)
    for _ in range(2):
        transition = await health.record("openai", "failure", 10)
        assert transition is not None and not transition.changed
    assert (await health.availability(["openai"]))["openai"] == "closed"
    transition = await health.record("openai", "failure", 10)
    assert transition is not None and transition.changed and transition.state == "open"
    assert (await health.availability(["openai"]))["openai"] == "open"
    assert not await health.acquire_probe("openai")


@pytest.mark.asyncio
async def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    clock = Clock()
    health = tracker(clock)
    await health.record("openai", "failure", 10)
    await health.record("openai", "failure", 10)
    await health.record("openai", "success", 10)
    await health.record("openai", "failure", 10)
    await health.record("openai", "failure", 10)
    assert (await health.availability(["openai"]))["openai"] == "closed"


@pytest.mark.asyncio
async def test_client_errors_and_key_refusals_do_not_touch_the_breaker() -> None:
    clock = Clock()
    health = tracker(clock, threshold=1)
    for _ in range(5):
        assert await health.record("openai", "neutral", 10) is None
    assert (await health.availability(["openai"]))["openai"] == "closed"
    stats = await health.window("openai")
    assert stats.attempts == 5 and stats.errors == 0


@pytest.mark.asyncio
async def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_the_circuit() -> None:
    clock = Clock()
    health = tracker(clock, threshold=1, cooldown_s=30)
    await health.record("openai", "failure", 10)
    clock.now += 29
    assert (await health.availability(["openai"]))["openai"] == "open"
    clock.now += 2
    assert (await health.availability(["openai"]))["openai"] == "half_open"
    assert await health.acquire_probe("openai")
    assert not await health.acquire_probe("openai"), "only one probe at a time"
    assert (await health.availability(["openai"]))["openai"] == "open"
    transition = await health.record("openai", "success", 10)
    assert transition is not None and transition.changed and transition.state == "closed"
    assert (await health.availability(["openai"]))["openai"] == "closed"
    assert await health.acquire_probe("openai")


@pytest.mark.asyncio
async def test_a_failed_probe_reopens_for_a_fresh_cooldown() -> None:
    clock = Clock()
    health = tracker(clock, threshold=1, cooldown_s=30)
    await health.record("openai", "failure", 10)
    clock.now += 31
    assert await health.acquire_probe("openai")
    await health.record("openai", "failure", 10)
    clock.now += 29
    assert (await health.availability(["openai"]))["openai"] == "open"
    clock.now += 2
    assert (await health.availability(["openai"]))["openai"] == "half_open"


@pytest.mark.asyncio
async def test_a_released_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    health = tracker(clock, threshold=1)
    await health.record("openai", "failure", 10)
    clock.now += 31
    assert await health.acquire_probe("openai")
    await health.release_probe("openai")
    assert await health.acquire_probe("openai")


@pytest.mark.asyncio
async def test_providers_are_independent() -> None:
    clock = Clock()
    health = tracker(clock, threshold=1)
    await health.record("openai", "failure", 10)
    assert await health.availability(["openai", "anthropic"]) == {"openai": "open", "anthropic": "closed"}


@pytest.mark.asyncio
async def test_without_redis_every_worker_leads_the_monitor() -> None:
    assert await tracker(Clock()).try_lead("x", "me", 1000)


@pytest.mark.asyncio
async def test_the_window_keeps_five_minutes_of_attempts() -> None:
    clock = Clock()
    local = LocalHealth(CircuitPolicy(), clock)
    for latency in (10, 20, 30, 40, 5000):
        local.record_attempt("p", True, latency)
    local.record_attempt("p", False, 100)
    stats = local.window("p")
    assert (stats.attempts, stats.errors) == (6, 1) and stats.p95_ms == 6400
    clock.now += 301
    assert local.window("p").attempts == 0 and local.window("p").error_rate is None


def test_availability_from_a_stored_state() -> None:
    assert availability(CircuitState("closed", 2, 0), 5) == "closed"
    assert availability(CircuitState("open", 3, 10), 5) == "open"
    assert availability(CircuitState("open", 3, 10), 10) == "half_open"
    assert availability(CircuitState("open", 3, 10, probe_until_ms=20), 15) == "open"


def test_latency_histogram_p95() -> None:
    assert latency_bin(0) == 0 and latency_bin(50) == 0 and latency_bin(51) == 1 and latency_bin(10**7) == 11
    assert p95_from_bins([0] * 12) is None
    bins = [0] * 12
    bins[2] = 95
    bins[5] = 5
    assert p95_from_bins(bins) == 200
    bins[5] = 6
    assert p95_from_bins(bins) == 1600
