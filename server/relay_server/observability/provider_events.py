"""The provider events of this process, buffered off the request path.

``note`` is what the circuit breaker, the health monitor and the anomaly watcher
call when something happens to a provider: an O(1) append to a bounded buffer,
never a database write on the request that tripped it.  ``run`` flushes the
buffer every ``flush_s`` (one transaction per batch), and ``close`` flushes what
is left at shutdown.  If Postgres is unreachable the batch is kept for the next
flush; past ``max_buffered`` the oldest events are dropped (and counted), so an
outage of the database cannot grow this process without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from relay_server.domain.provider_events import EventKind, ProviderEvent

log = logging.getLogger(__name__)


class EventStore(Protocol):
    async def insert(self, events: Iterable[ProviderEvent]) -> int: ...


class ProviderEventLog:
    def __init__(self, store: EventStore | None, *, flush_s: float = 1.0, max_buffered: int = 1000) -> None:
        self._store = store
        self._flush_s = flush_s
        self._buffer: deque[ProviderEvent] = deque(maxlen=max_buffered)
        self.dropped = 0
        self.written = 0

    def note(
        self, provider_id: str, kind: EventKind, message: str, *,
        error_rate: float | None = None, p95_ms: int | None = None, signal: str | None = None,
    ) -> None:  # fmt: skip
        """Record that something happened (hot path: no I/O)."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(ProviderEvent(provider_id, kind, message, datetime.now(UTC), error_rate, p95_ms, signal))

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> int:
        """Write what is buffered; on failure keep it for the next round.  Returns rows written."""
        if not self._buffer or self._store is None:
            return 0
        batch = list(self._buffer)
        self._buffer.clear()
        try:
            written = await self._store.insert(batch)
        except Exception:  # noqa: BLE001 (Postgres trouble must not lose the events or stop the loop)
            log.warning("could not record provider events; keeping them for the next flush", exc_info=True)
            keep = batch + list(self._buffer)  # oldest first, as they happened
            self._buffer.clear()
            overflow = max(0, len(keep) - (self._buffer.maxlen or len(keep)))
            self.dropped += overflow
            self._buffer.extend(keep[overflow:])
            return 0
        self.written += written
        return written

    async def run(self) -> None:
        """The flush loop (a supervised background loop of the server process)."""
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
