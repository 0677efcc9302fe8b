"""The observability capability of one server process, assembled from settings.

``relay_server.app`` calls ``build_observability`` once (metrics, tracing, the anomaly
detector), wraps the pipeline's recorder with ``recorder``, hands ``hub`` to
the API servicers (they bind each request to it), and calls ``start`` once
the server is up (the sampler, and ``/metrics`` when this worker serves it
itself) and ``stop`` on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from relay_server.domain.metered import RequestRecorder
from relay_server.observability.anomaly import AnomalyDetector, AnomalyWatcher, StatusStore
from relay_server.observability.exposition import MetricsServer, is_multiprocess, merged_registry
from relay_server.observability.metrics import RelayMetrics
from relay_server.observability.process_metrics import add_runtime_collectors
from relay_server.observability.provider_events import ProviderEventLog
from relay_server.observability.recorder import ObservingRecorder
from relay_server.observability.sampler import Sampler, Sources
from relay_server.observability.tracing import Tracing, build_tracing
from relay_server.settings import Settings


@dataclass
class Observability:
    settings: Settings
    metrics: RelayMetrics
    registry: CollectorRegistry
    """This process's own registry (in a supervised worker the values go to the shared files instead)."""
    tracing: Tracing | None
    detector: AnomalyDetector
    sampler: Sampler | None = None
    server: MetricsServer | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def recorder(self, inner: RequestRecorder) -> ObservingRecorder:
        return ObservingRecorder(inner, self.metrics)

    def start(self, sources: Sources, statuses: StatusStore | None = None, events: ProviderEventLog | None = None) -> None:
        """Start sampling (and serving /metrics, unless a supervisor does it for this worker)."""
        settings = self.settings
        self.sampler = Sampler(self.metrics, sources, AnomalyWatcher(self.detector, statuses, self.metrics, events))
        self._task = asyncio.get_running_loop().create_task(self.sampler.run(settings.metrics_sample_s), name="metrics-sampler")
        if settings.metrics_port:
            registry = merged_registry() if is_multiprocess() else self.registry
            self.server = MetricsServer.start(settings.metrics_host, settings.metrics_port, registry)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.sampler is not None:
            await self.sampler.sample()  # the last counts, before the process goes
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self.server = None
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)


def build_observability(settings: Settings, *, span_exporter: Any = None) -> Observability:
    registry = CollectorRegistry()
    add_runtime_collectors(registry)
    return Observability(
        settings=settings,
        metrics=RelayMetrics(registry),
        registry=registry,
        tracing=build_tracing(settings, span_exporter),
        detector=AnomalyDetector(
            window_s=settings.anomaly_window_s,
            baseline_s=settings.anomaly_baseline_s,
            z_threshold=settings.anomaly_z_threshold,
            min_samples=settings.anomaly_min_samples,
        ),
    )
