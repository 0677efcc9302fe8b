"""Provider anomaly detection: z-scores over sliding windows, and what a starting anomaly records."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from relay_server.observability.anomaly import AnomalyAwareStatuses, AnomalyDetector, AnomalyWatcher
from relay_server.observability.metrics import RelayMetrics

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def detector(clock: Clock, **overrides: float) -> AnomalyDetector:
    options = {"window_s": 60.0, "baseline_s": 600.0, "z_threshold": 3.0, "min_samples": 20}
    options.update(overrides)
    return AnomalyDetector(clock=clock, **options)  # type: ignore[arg-type]


def feed(d: AnomalyDetector, clock: Clock, seconds: int, *, per_s: int, latency_ms: float, error_rate: float,
         rng: random.Random, provider: str = "openai") -> None:  # fmt: skip
    """``seconds`` of traffic: ``per_s`` attempts a second around ``latency_ms`` (±10 %)."""
    for _ in range(seconds):
        for _ in range(per_s):
            ok = rng.random() >= error_rate
            d.observe(provider, latency_ms * rng.uniform(0.9, 1.1), ok)
        clock.now += 1


def steady(d: AnomalyDetector, clock: Clock, rng: random.Random, seconds: int = 600) -> None:
    feed(d, clock, seconds, per_s=2, latency_ms=400, error_rate=0.02, rng=rng)


async def test_steady_traffic_is_not_anomalous() -> None:
    clock, rng = Clock(), random.Random(1)
    d = detector(clock)
    steady(d, clock, rng)
    assert d.anomalies() == []


async def test_a_latency_spike_is_an_anomaly_with_a_message() -> None:
    clock, rng = Clock(), random.Random(2)
    d = detector(clock)
    steady(d, clock, rng)
    feed(d, clock, 60, per_s=2, latency_ms=1200, error_rate=0.02, rng=rng)
    [anomaly] = d.anomalies()
    assert anomaly.provider_id == "openai" and anomaly.signal == "latency"
    assert anomaly.value == pytest.approx(1200, rel=0.1)
    assert anomaly.baseline == pytest.approx(400, rel=0.1)
    assert anomaly.z >= 3
    assert "mean latency" in anomaly.message and "baseline of" in anomaly.message


async def test_an_error_rate_spike_is_an_anomaly() -> None:
    clock, rng = Clock(), random.Random(3)
    d = detector(clock)
    steady(d, clock, rng)
    feed(d, clock, 60, per_s=2, latency_ms=400, error_rate=0.5, rng=rng)
    signals = {a.signal: a for a in d.anomalies()}
    assert set(signals) == {"error_rate"}
    assert 0.3 < signals["error_rate"].error_rate < 0.7
    assert "error rate" in signals["error_rate"].message


async def test_improvements_and_small_changes_are_not_anomalies() -> None:
    clock, rng = Clock(), random.Random(4)
    d = detector(clock)
    steady(d, clock, rng)
    feed(d, clock, 60, per_s=2, latency_ms=100, error_rate=0.0, rng=rng)  # faster and healthier
    assert d.anomalies() == []
    feed(d, clock, 60, per_s=2, latency_ms=420, error_rate=0.03, rng=rng)  # within the deviation floors
    assert d.anomalies() == []


async def test_too_few_samples_or_too_little_history_say_nothing() -> None:
    clock, rng = Clock(), random.Random(5)
    d = detector(clock)
    steady(d, clock, rng)
    feed(d, clock, 60, per_s=0, latency_ms=0, error_rate=0, rng=rng)
    for _ in range(10):  # 10 slow failures in the last window: under min_samples
        d.observe("openai", 5000, ok=False)
    assert d.anomalies() == []

    fresh_clock = Clock()
    fresh = detector(fresh_clock)
    feed(fresh, fresh_clock, 120, per_s=2, latency_ms=400, error_rate=0.0, rng=rng)  # two windows of history only
    feed(fresh, fresh_clock, 60, per_s=2, latency_ms=4000, error_rate=0.9, rng=rng)
    assert fresh.anomalies() == []


async def test_an_anomaly_keeps_its_start_and_ends() -> None:
    clock, rng = Clock(), random.Random(6)
    d = detector(clock)
    steady(d, clock, rng)
    feed(d, clock, 30, per_s=4, latency_ms=2000, error_rate=0.02, rng=rng)
    [first] = d.anomalies()
    feed(d, clock, 10, per_s=4, latency_ms=2000, error_rate=0.02, rng=rng)
    [later] = d.anomalies()
    assert later.since == first.since
    feed(d, clock, 120, per_s=2, latency_ms=400, error_rate=0.02, rng=rng)
    assert d.anomalies() == []


async def test_providers_are_judged_separately_and_idle_ones_forgotten() -> None:
    clock, rng = Clock(), random.Random(7)
    d = detector(clock)
    for _ in range(600):
        d.observe("openai", 400 * rng.uniform(0.9, 1.1), ok=True)
        d.observe("anthropic", 800 * rng.uniform(0.9, 1.1), ok=True)
        d.observe("openai", 400 * rng.uniform(0.9, 1.1), ok=True)
        clock.now += 1
    for _ in range(60):
        d.observe("anthropic", 800 * rng.uniform(0.9, 1.1), ok=True)
        d.observe("anthropic", 800, ok=True)
        d.observe("openai", 3000, ok=True)
        d.observe("openai", 3000, ok=True)
        clock.now += 1
    assert [(a.provider_id, a.signal) for a in d.anomalies()] == [("openai", "latency")]
    clock.now += 3600
    assert d.anomalies() == []
    assert d._buckets == {}  # noqa: SLF001 (memory is bounded: idle providers are dropped)


@pytest.mark.parametrize(
    "options",
    [{"window_s": 0}, {"window_s": 60, "baseline_s": 30}, {"z_threshold": 0}, {"min_samples": 0}],
)
async def test_bad_parameters_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        detector(Clock(), **options)


class Statuses:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        self.fail = fail

    async def record_status(self, provider_id: str, health: str, *, error_rate, p95_ms, message) -> bool:  # noqa: ANN001
        if self.fail:
            raise OSError("postgres is down")
        self.calls.append((provider_id, health, message))
        return True


async def test_the_watcher_records_a_starting_anomaly_once() -> None:
    clock, rng = Clock(), random.Random(8)
    d = detector(clock)
    registry = CollectorRegistry()
    metrics = RelayMetrics(registry)
    statuses = Statuses()
    watcher = AnomalyWatcher(d, statuses, metrics)
    steady(d, clock, rng)
    assert await watcher.check() == []
    feed(d, clock, 60, per_s=2, latency_ms=1500, error_rate=0.02, rng=rng)
    started = await watcher.check()
    assert [a.signal for a in started] == ["latency"]
    assert await watcher.check() == []  # still active: not a new start
    assert len(statuses.calls) == 1
    provider, health, message = statuses.calls[0]
    assert (provider, health) == ("openai", "degraded") and message and message.startswith("anomaly: mean latency")
    labels = {"provider": "openai", "signal": "latency"}
    assert registry.get_sample_value("relay_provider_anomalies_total", labels) == 1
    assert registry.get_sample_value("relay_provider_anomaly", labels) == 1
    feed(d, clock, 120, per_s=2, latency_ms=400, error_rate=0.02, rng=rng)
    assert await watcher.check() == []
    assert registry.get_sample_value("relay_provider_anomaly", labels) == 0


async def test_a_failing_status_store_does_not_stop_the_watcher() -> None:
    clock, rng = Clock(), random.Random(9)
    d = detector(clock)
    watcher = AnomalyWatcher(d, Statuses(fail=True))
    steady(d, clock, rng)
    feed(d, clock, 60, per_s=2, latency_ms=1500, error_rate=0.02, rng=rng)
    assert [a.signal for a in await watcher.check()] == ["latency"]


async def test_the_monitor_keeps_an_anomalous_provider_degraded() -> None:
    clock, rng = Clock(), random.Random(10)
    d = detector(clock)
    inner = Statuses()
    statuses = AnomalyAwareStatuses(inner, d)
    steady(d, clock, rng)
    await statuses.record_status("openai", "healthy", error_rate=0.0, p95_ms=400, message=None)
    feed(d, clock, 60, per_s=2, latency_ms=1500, error_rate=0.02, rng=rng)
    await statuses.record_status("openai", "healthy", error_rate=0.0, p95_ms=400, message=None)
    await statuses.record_status("openai", "down", error_rate=1.0, p95_ms=None, message="probe failed")
    await statuses.record_status("anthropic", "healthy", error_rate=0.0, p95_ms=None, message=None)
    assert [(p, h) for p, h, _ in inner.calls] == [
        ("openai", "healthy"), ("openai", "degraded"), ("openai", "down"), ("anthropic", "healthy"),
    ]  # fmt: skip
    assert inner.calls[1][2].startswith("anomaly:") and inner.calls[2][2] == "probe failed"
