"""Provider anomaly detection: z-scores of error rate and latency over sliding windows.

Every provider attempt is a sample (``observe``).  Samples land in small time
buckets; the *current* window is the last ``window_s`` seconds, the
*baseline* is the non-overlapping windows of the same length before it, back
``baseline_s`` seconds.  A signal is anomalous when the current window's value
is ``z_threshold`` standard deviations above the baseline windows' mean:

* error rate — failures (provider faults, not client errors) / attempts;
* latency — the mean response time (streams: time to first chunk) of the
  attempts that succeeded.

Only rises count (a provider getting faster or healthier is not news).  The
deviation has a floor (5 points of error rate, 10 % or 5 ms of latency) so a
perfectly flat baseline does not turn noise into an incident, and a window
needs ``min_samples`` attempts to count at all.

This module only detects; ``AnomalyWatcher`` turns a starting anomaly into a
metric, a log line, an ``anomaly`` provider event (through the buffered
``ProviderEventLog``) and a status change to degraded (through the health
monitor's ``StatusStore``), and ``AnomalyAwareStatuses`` lets the monitor's own
verdicts respect an anomaly that is still active.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from relay_server.observability.provider_events import ProviderEventLog

log = logging.getLogger(__name__)

Signal = Literal["error_rate", "latency"]

_BUCKETS_PER_WINDOW = 6
_ERROR_RATE_FLOOR = 0.05
_LATENCY_FLOOR_SHARE = 0.10
_LATENCY_FLOOR_MS = 5.0


@dataclass(frozen=True, slots=True)
class Anomaly:
    provider_id: str
    signal: Signal
    value: float
    """The current window's error rate (0..1) or mean latency (ms)."""
    baseline: float
    stddev: float
    z: float
    samples: int
    error_rate: float
    """The current window's error rate, whatever the signal (for the health event)."""
    since: float

    @property
    def message(self) -> str:
        if self.signal == "error_rate":
            what = f"error rate {self.value:.0%} against a baseline of {self.baseline:.0%}"
        else:
            what = f"mean latency {self.value:.0f} ms against a baseline of {self.baseline:.0f} ms"
        return f"anomaly: {what} (z={self.z:.1f}, {self.samples} attempts in the last window)"


class _Window:
    __slots__ = ("count", "errors", "ok", "latency_ms")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.ok = 0
        self.latency_ms = 0.0  # sum over the successful attempts

    def add(self, other: _Window) -> None:
        self.count += other.count
        self.errors += other.errors
        self.ok += other.ok
        self.latency_ms += other.latency_ms


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


class AnomalyDetector:
    def __init__(
        self,
        *,
        window_s: float = 60.0,
        baseline_s: float = 1800.0,
        z_threshold: float = 3.0,
        min_samples: int = 20,
        min_baseline_windows: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or baseline_s < window_s or z_threshold <= 0 or min_samples < 1:
            raise ValueError("anomaly detection needs window_s > 0, baseline_s >= window_s, z_threshold > 0, min_samples >= 1")
        self._bucket_s = window_s / _BUCKETS_PER_WINDOW
        self._baseline_windows = int(baseline_s // window_s)
        self._z = z_threshold
        self._min_samples = min_samples
        self._min_baseline = min(min_baseline_windows, self._baseline_windows)
        self._clock = clock
        self._keep = (self._baseline_windows + 1) * _BUCKETS_PER_WINDOW
        self._buckets: dict[str, deque[tuple[int, _Window]]] = {}
        self._since: dict[tuple[str, Signal], float] = {}

    def observe(self, provider_id: str, latency_ms: float, ok: bool) -> None:
        """One attempt's result (hot path: O(1))."""
        index = int(self._clock() // self._bucket_s)
        buckets = self._buckets.get(provider_id)
        if buckets is None:
            buckets = self._buckets[provider_id] = deque()
        if not buckets or buckets[-1][0] != index:
            buckets.append((index, _Window()))
            while buckets[0][0] <= index - self._keep:
                buckets.popleft()
        window = buckets[-1][1]
        window.count += 1
        if ok:
            window.ok += 1
            window.latency_ms += latency_ms
        else:
            window.errors += 1

    def _windows(self, buckets: deque[tuple[int, _Window]], now_index: int) -> list[_Window]:
        """[current, previous, ...]: windows of _BUCKETS_PER_WINDOW buckets ending at now_index."""
        windows = [_Window() for _ in range(self._baseline_windows + 1)]
        for index, bucket in buckets:
            age = now_index - index
            if 0 <= age < self._keep:
                windows[age // _BUCKETS_PER_WINDOW].add(bucket)
        return windows

    def anomalies(self) -> list[Anomaly]:
        """The anomalies active now, one per (provider, signal)."""
        now = self._clock()
        now_index = int(now // self._bucket_s)
        found: list[Anomaly] = []
        for provider_id in list(self._buckets):
            buckets = self._buckets[provider_id]
            if not buckets or buckets[-1][0] <= now_index - self._keep:
                del self._buckets[provider_id]  # idle for longer than we remember
                continue
            current, *baseline = self._windows(buckets, now_index)
            if current.count < self._min_samples:
                continue
            error_rate = current.errors / current.count
            rates = [w.errors / w.count for w in baseline if w.count >= self._min_samples]
            found.extend(self._check(provider_id, "error_rate", error_rate, rates, _ERROR_RATE_FLOOR, current, error_rate, now))
            if current.ok >= self._min_samples:
                latencies = [w.latency_ms / w.ok for w in baseline if w.ok >= self._min_samples]
                mean_latency = current.latency_ms / current.ok
                floor = max(_LATENCY_FLOOR_MS, _LATENCY_FLOOR_SHARE * (sum(latencies) / len(latencies) if latencies else 0))
                found.extend(self._check(provider_id, "latency", mean_latency, latencies, floor, current, error_rate, now))
        active = {(a.provider_id, a.signal) for a in found}
        for key in list(self._since):
            if key not in active:
                del self._since[key]
        return found

    def _check(
        self, provider_id: str, signal: Signal, value: float, baseline: list[float], floor: float,
        current: _Window, error_rate: float, now: float,
    ) -> list[Anomaly]:  # fmt: skip
        if len(baseline) < self._min_baseline:
            return []
        mean, std = _mean_std(baseline)
        z = (value - mean) / max(std, floor)
        if z < self._z:
            return []
        since = self._since.setdefault((provider_id, signal), now)
        return [Anomaly(provider_id, signal, value, mean, std, z, current.count, error_rate, since)]


class StatusStore(Protocol):
    """The health monitor's write (``PostgresProviderStore.record_status``)."""

    async def record_status(
        self, provider_id: str, health: str, *, error_rate: float | None, p95_ms: int | None, message: str | None
    ) -> bool: ...


class AnomalyAwareStatuses:
    """A ``StatusStore`` for the health monitor: a 'healthy' verdict becomes
    'degraded' (with the anomaly's message) while the provider is anomalous."""

    def __init__(self, inner: StatusStore, detector: AnomalyDetector) -> None:
        self._inner = inner
        self._detector = detector

    async def record_status(
        self, provider_id: str, health: str, *, error_rate: float | None, p95_ms: int | None, message: str | None
    ) -> bool:
        if health == "healthy":
            active = [a for a in self._detector.anomalies() if a.provider_id == provider_id]
            if active:
                health, message = "degraded", active[0].message
        return await self._inner.record_status(provider_id, health, error_rate=error_rate, p95_ms=p95_ms, message=message)


class AnomalyWatcher:
    """Checks the detector; a starting anomaly is counted, logged and recorded as a health event."""

    def __init__(
        self, detector: AnomalyDetector, statuses: StatusStore | None, metrics: Any = None,
        events: ProviderEventLog | None = None,
    ) -> None:  # fmt: skip
        self._detector = detector
        self._events = events
        self._statuses = statuses
        self._metrics = metrics
        self._active: set[tuple[str, Signal]] = set()

    async def check(self) -> list[Anomaly]:
        """One round; returns the anomalies that started since the last one."""
        anomalies = self._detector.anomalies()
        active = {(a.provider_id, a.signal) for a in anomalies}
        started = [a for a in anomalies if (a.provider_id, a.signal) not in self._active]
        if self._metrics is not None:
            for provider_id, signal in self._active - active:
                self._metrics.anomaly.labels(provider_id, signal).set(0)
            for provider_id, signal in active:
                self._metrics.anomaly.labels(provider_id, signal).set(1)
        self._active = active
        for anomaly in started:
            if self._metrics is not None:
                self._metrics.anomalies.labels(anomaly.provider_id, anomaly.signal).inc()
            log.warning(
                "provider anomaly started",
                extra={"provider_id": anomaly.provider_id, "signal": anomaly.signal, "z": round(anomaly.z, 2),
                       "value": round(anomaly.value, 4), "baseline": round(anomaly.baseline, 4)},
            )  # fmt: skip
            await self._record(anomaly)
        return started

    async def _record(self, anomaly: Anomaly) -> None:
        if self._events is not None:
            # Each worker detects on its own traffic: the event store keeps one row per provider and signal.
            self._events.note(
                anomaly.provider_id, "anomaly", anomaly.message, error_rate=anomaly.error_rate, signal=anomaly.signal
            )
        if self._statuses is None:
            return
        try:
            # One event however many workers see it: the store writes only on a status change.
            await self._statuses.record_status(
                anomaly.provider_id, "degraded", error_rate=anomaly.error_rate, p95_ms=None, message=anomaly.message
            )
        except Exception:  # noqa: BLE001 (Postgres trouble must not stop detection)
            log.warning("could not record a provider anomaly", extra={"provider_id": anomaly.provider_id}, exc_info=True)
