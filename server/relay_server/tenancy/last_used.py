"""``api_keys.last_used_at`` without a write per request.

Authentication calls ``touch(key_id)`` (a dict assignment); a background loop
writes everything collected so far in one UPDATE every ``flush_s`` seconds.
A failed flush keeps its batch for the next one, so an outage delays the
timestamps instead of losing them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger(__name__)


class LastUsedStore(Protocol):
    async def touch_last_used(self, used: Mapping[str, datetime]) -> int: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LastUsedRecorder:
    def __init__(
        self, store: LastUsedStore, *, flush_s: float = 5.0, clock: Callable[[], datetime] = _utcnow, max_pending: int = 200_000
    ) -> None:
        self._store = store
        self._flush_s = flush_s
        self._clock = clock
        self._max_pending = max_pending
        self._pending: dict[str, datetime] = {}

    def touch(self, key_id: str) -> None:
        if len(self._pending) < self._max_pending or key_id in self._pending:
            self._pending[key_id] = self._clock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            return await self._store.touch_last_used(batch)
        except Exception as exc:  # noqa: BLE001 (keep the batch; the next flush retries it)
            for key_id, used_at in batch.items():
                if key_id not in self._pending or self._pending[key_id] < used_at:
                    self._pending[key_id] = used_at
            log.warning("last_used_at flush failed; kept for the next one", extra={"keys": len(batch), "error": repr(exc)})
            return 0

    async def run(self) -> None:
        """Flush every ``flush_s`` until cancelled."""
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()
