"""Provider health events: what happened to a provider, as operators list it.

Written by the circuit breaker (opened, half-open, closed), the health monitor
(failure bursts, status changes) and the anomaly watcher; listed by
``ListProviderEvents``.  Each is a rare, edge-triggered fact, never one row per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

EventKind = Literal["status_changed", "circuit_opened", "circuit_half_open", "circuit_closed", "failure_burst", "anomaly"]
EVENT_KINDS: tuple[str, ...] = (
    "circuit_opened", "circuit_half_open", "circuit_closed", "failure_burst", "anomaly", "status_changed",
)  # fmt: skip
MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One event to record (``at`` is when it happened, not when the buffer was flushed)."""

    provider_id: str
    kind: EventKind
    message: str
    at: datetime
    error_rate: float | None = None
    p95_ms: int | None = None
    signal: str | None = None
    """Anomalies: ``error_rate`` | ``latency``."""


@dataclass(frozen=True, slots=True)
class ProviderEventRow:
    """A recorded event, as listed."""

    id: str
    provider_id: str
    kind: str
    status: str | None
    message: str | None
    error_rate: float | None
    p95_ms: int | None
    created_at: datetime
