"""Background work inside a server process: the durable job worker, periodic
sweeps and long-running loops (cache invalidation listener, last_used flusher).

Durable jobs and periodic sweeps run on procrastinate (``job_app``): every
server process with ``RELAY_BACKGROUND_JOBS`` on runs one worker (so
``make up`` and the test stacks need no extra process), and any number of
them share the queue in Postgres: a job is fetched with ``FOR UPDATE SKIP
LOCKED`` by exactly one worker, a periodic tick is deferred once for the
cluster.  Loops are in-process only (they hold a subscription or a buffer of
this process), supervised here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any

import procrastinate

from relay_server.storage.postgres.pool import Database
from relay_server.workers.job_app import (
    JobHandler,
    Kind,
    Periodic,
    PermanentJobError,
    build_app,
    default_backoff,
    periodic_queue,
)

__all__ = ["BackgroundRunner", "JobHandler", "Periodic", "PermanentJobError", "default_backoff"]

log = logging.getLogger(__name__)

# Postgres unreachable when the worker starts or dies: try again after this long.
_RESTART_S = 5.0


class BackgroundRunner:
    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, JobHandler],
        *,
        poll_s: float = 1.0,
        backoff: Callable[[int], timedelta] = default_backoff,
        concurrency: int = 4,
        shutdown_grace_s: float = 10.0,
        worker_name: str | None = None,
    ) -> None:
        self._db = db
        self._kinds = {kind: Kind(handler) for kind, handler in handlers.items()}
        self._poll_s = poll_s
        self._backoff = backoff
        self._concurrency = concurrency
        self._grace_s = shutdown_grace_s
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self._periodic: list[Periodic] = []
        self._loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._ran = 0

    def add_handler(self, kind: str, handler: JobHandler, *, max_attempts: int = 10) -> None:
        """Run jobs of ``kind`` with ``handler`` (register before ``start``)."""
        if kind in self._kinds:
            raise ValueError(f"a handler for job kind {kind!r} is registered already")
        self._kinds[kind] = Kind(handler, max_attempts)

    def set_max_attempts(self, kind: str, max_attempts: int) -> None:
        self._kinds[kind] = Kind(self._kinds[kind].handler, max_attempts)

    def add_periodic(self, periodic: Periodic) -> None:
        self._periodic.append(periodic)

    def add_loop(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A coroutine that runs until cancelled (it handles its own errors)."""
        self._loops.append((name, loop))

    def wake(self) -> None:
        """Kept for callers that queue work: a queued job already wakes every
        worker (procrastinate's NOTIFY on insert), so there is nothing to do."""

    def start(self, *, jobs_enabled: bool = True) -> None:
        for name, loop in self._loops:
            self._tasks.append(asyncio.create_task(loop(), name=name))
        if jobs_enabled:
            self._tasks.append(asyncio.create_task(self._serve(), name="jobs"))

    async def stop(self) -> None:
        # Cancelling the worker lets running jobs finish for up to the grace
        # period; a job cut short stays "doing" until the lifecycle sweep
        # finds its worker's heartbeat gone and queues it again.
        self._stopping.set()  # the worker may end its run without re-raising the cancellation
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _app(self, *, periodic: bool) -> procrastinate.App:
        return build_app(
            self._db.owner_dsn, self._kinds, self._periodic if periodic else [], backoff=self._backoff,
            on_run=self._count, pool_max=self._concurrency + 2,
        )  # fmt: skip

    def _count(self) -> None:
        self._ran += 1

    def _queues(self, *, periodic: bool) -> list[str]:
        return [*self._kinds, *(map(periodic_queue, self._periodic) if periodic else ())]

    async def _serve(self) -> None:
        """The process's worker, for as long as the process runs."""
        while not self._stopping.is_set():
            app = self._app(periodic=True)
            try:
                async with app.open_async():
                    await app.run_worker_async(
                        queues=self._queues(periodic=True), name=self.worker_name, concurrency=self._concurrency,
                        wait=True, install_signal_handlers=False, fetch_job_polling_interval=self._poll_s,
                        shutdown_graceful_timeout=self._grace_s, delete_jobs="successful",
                    )  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (Postgres trouble: start again)
                log.warning("job worker stopped; restarting", exc_info=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _RESTART_S)

    async def drain(self, limit: int = 100) -> int:
        """Run the jobs that are due until none is left (tests, CLI); returns how
        many ran.  Periodic sweeps are not deferred by a drain."""
        before = self._ran
        app = self._app(periodic=False)
        async with app.open_async():
            await app.run_worker_async(
                queues=self._queues(periodic=False), name=f"{self.worker_name}:drain", concurrency=1, wait=False,
                install_signal_handlers=False, listen_notify=False, delete_jobs="successful",
            )  # fmt: skip
        return min(self._ran - before, limit)
