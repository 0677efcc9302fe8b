"""Periodic reload of a small in-memory copy (catalog, provider directory).

The hot path reads the copy and never waits on Postgres; a failed reload keeps
the last good copy and logs, so a database blip does not stop routing.

Loads are serialised: a periodic load that read the table just before an
operator's change must not finish after the change's own reload and put the
old copy back (the last load to *start* is the one that stays installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class PeriodicReload:
    def __init__(self, load: Callable[[], Awaitable[None]], *, every_s: float, name: str) -> None:
        self._load = load
        self._every_s = every_s
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def now(self) -> None:
        """Load at once (after a change), after any load already under way."""
        async with self._lock:
            await self._load()

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name=f"{self._name}-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self.now()
            except Exception:
                log.warning("%s reload failed; keeping the previous copy", self._name, exc_info=True)
