"""Metrics read from the components every ``metrics_sample_s``, in every worker.

Some figures are state, not events: the request log queue, the spool on disk,
the providers' circuits.  Others are counters the components keep themselves
(the admission gate's fail-open count, the request log writer's rows); the
sampler adds their growth to Prometheus counters, so the components need no
metrics code.  Each round also runs the anomaly watcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay_server.observability.anomaly import AnomalyWatcher
from relay_server.observability.metrics import CIRCUIT_VALUES, RelayMetrics

log = logging.getLogger(__name__)

_GATE_STATS = ("limits_failed_open", "caps_failed_closed", "caps_unchecked", "settle_failures")
_WRITER_COUNTS = ("written", "spooled", "replayed", "sanitised", "dead")


@dataclass
class Sources:
    """What the sampler reads; every part is optional (a missing one is not sampled)."""

    gate: Any = None
    """``AdmissionGate``: its ``stats``."""
    writer: Any = None
    """``RequestLogWriter``: its row counters and queue."""
    spool_dir: Path | None = None
    health: Any = None
    """``HealthTracker``: ``availability(provider_ids)``."""
    provider_ids: Callable[[], Sequence[str]] | None = None
    policy_caches: Sequence[Any] = ()
    """``PolicyCache``s: their ``stale_served`` counts, by ``name``."""


def spool_usage(directory: Path) -> tuple[int, int]:
    """(segments, bytes) of the spool files waiting for replay (blocking: run in a thread)."""
    segments = size = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if ".open" in entry.name or ".jsonl" in entry.name:
                    segments += 1
                    size += entry.stat().st_size
    except FileNotFoundError:
        pass
    return segments, size


def queued_rows(writer: Any) -> int:
    # RequestLogWriter keeps no public depth yet; its asyncio queue is the depth.
    queue = getattr(writer, "_queue", None)
    return queue.qsize() if queue is not None else 0


@dataclass
class Sampler:
    metrics: RelayMetrics
    sources: Sources
    watcher: AnomalyWatcher | None = None
    _last: dict[str, int] = field(default_factory=dict)

    async def sample(self) -> None:
        """One round; each part fails alone."""
        for part in (self._counters, self._depths, self._circuits, self._anomalies):
            try:
                await part()
            except Exception:  # noqa: BLE001 (a metric must never take the worker down)
                log.warning("metrics sample failed", extra={"part": part.__name__}, exc_info=True)

    def _grow(self, name: str, value: int, counter: Any) -> None:
        delta = value - self._last.get(name, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[name] = value

    async def _counters(self) -> None:
        gate, writer = self.sources.gate, self.sources.writer
        if gate is not None:
            for name in _GATE_STATS:
                self._grow(f"gate.{name}", int(getattr(gate.stats, name)), self.metrics.fail_open.labels(name))
        for cache in self.sources.policy_caches:
            self._grow(f"policy.{cache.name}", int(cache.stale_served), self.metrics.policy_stale.labels(cache.name))
        if writer is not None:
            for name in _WRITER_COUNTS:
                self._grow(f"writer.{name}", int(getattr(writer, name)), self.metrics.request_log_rows.labels(name))

    async def _depths(self) -> None:
        if self.sources.writer is not None:
            self.metrics.queue_depth.set(queued_rows(self.sources.writer))
        if self.sources.spool_dir is not None:
            segments, size = await asyncio.to_thread(spool_usage, self.sources.spool_dir)
            self.metrics.spool_segments.set(segments)
            self.metrics.spool_bytes.set(size)

    async def _circuits(self) -> None:
        health, ids = self.sources.health, self.sources.provider_ids
        if health is None or ids is None:
            return
        providers = list(ids())
        if providers:
            for provider_id, state in (await health.availability(providers)).items():
                self.metrics.circuit.labels(provider_id).set(CIRCUIT_VALUES.get(state, 0))

    async def _anomalies(self) -> None:
        if self.watcher is not None:
            await self.watcher.check()

    async def run(self, interval_s: float) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(interval_s)
