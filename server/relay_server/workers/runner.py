"""Background work inside a server process: the job loop, periodic sweeps and
long-running loops (cache invalidation listener, last_used flusher).

Every server process runs one runner, so several may poll the same queue at
once: jobs are claimed with ``FOR UPDATE SKIP LOCKED`` (one worker per job)
and periodic sweeps guard themselves with advisory locks.  A failing job
goes back to the queue with exponential back-off until ``max_attempts``
(then ``dead``); ``PermanentJobError`` fails it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from relay_server.storage.postgres import jobs
from relay_server.storage.postgres.jobs import Job
from relay_server.storage.postgres.pool import Database

log = logging.getLogger(__name__)

JobHandler = Callable[[Job], Awaitable[None]]


class PermanentJobError(Exception):
    """Retrying cannot help (the tenant is gone, the payload is unusable)."""


def default_backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s, … capped at 5 minutes."""
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), 300))


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    interval_s: float
    run: Callable[[], Awaitable[object]]


class BackgroundRunner:
    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, JobHandler],
        *,
        poll_s: float = 1.0,
        backoff: Callable[[int], timedelta] = default_backoff,
        worker_id: str | None = None,
    ) -> None:
        self._db = db
        self._handlers = dict(handlers)
        self._poll_s = poll_s
        self._backoff = backoff
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._periodic: list[Periodic] = []
        self._loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def add_handler(self, kind: str, handler: JobHandler) -> None:
        """Run jobs of ``kind`` with ``handler`` (register before ``start``)."""
        if kind in self._handlers:
            raise ValueError(f"a handler for job kind {kind!r} is registered already")
        self._handlers[kind] = handler

    def add_periodic(self, periodic: Periodic) -> None:
        self._periodic.append(periodic)

    def add_loop(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A coroutine that runs until cancelled (it handles its own errors)."""
        self._loops.append((name, loop))

    def wake(self) -> None:
        """New work was queued in this process: look now instead of at the next poll."""
        self._wake.set()

    def start(self, *, jobs_enabled: bool = True) -> None:
        for name, loop in self._loops:
            self._tasks.append(asyncio.create_task(loop(), name=name))
        if jobs_enabled:
            self._tasks.append(asyncio.create_task(self._job_loop(), name="jobs"))
            for periodic in self._periodic:
                self._tasks.append(asyncio.create_task(self._periodic_loop(periodic), name=periodic.name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def run_once(self) -> Job | None:
        """Claim one due job and run it; the job as claimed, or None if none was due."""
        async with self._db.system_tx() as conn:
            job = await jobs.claim(conn, self.worker_id, list(self._handlers))
        if job is None:
            return None
        try:
            await self._handlers[job.kind](job)
        except asyncio.CancelledError:
            # Shutting down mid-job: hand it back for another worker, not a failure.
            with contextlib.suppress(Exception):
                async with self._db.system_tx() as conn:
                    await jobs.fail(conn, job, "interrupted by shutdown", retry_in=timedelta(0))
            raise
        except Exception as exc:  # noqa: BLE001 (a job's failure is recorded, never fatal)
            permanent = isinstance(exc, PermanentJobError)
            async with self._db.system_tx() as conn:
                status = await jobs.fail(conn, job, f"{type(exc).__name__}: {exc}", retry_in=None if permanent else self._backoff(job.attempts))
            level = logging.ERROR if status in ("dead", "failed") else logging.WARNING
            log.log(level, "job failed", extra={"job_id": job.id, "kind": job.kind, "tenant_id": job.tenant_id,
                                                "attempts": job.attempts, "status": status, "error": repr(exc)})  # fmt: skip
        else:
            async with self._db.system_tx() as conn:
                await jobs.complete(conn, job.id)
        return job

    async def drain(self, limit: int = 100) -> int:
        """Run due jobs until none is left (tests, CLI); returns how many ran."""
        ran = 0
        while ran < limit and await self.run_once() is not None:
            ran += 1
        return ran

    async def _job_loop(self) -> None:
        while True:
            try:
                ran = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (Postgres trouble: keep polling)
                log.warning("job poll failed", exc_info=True)
                ran = None
            if ran is None:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def _periodic_loop(self, periodic: Periodic) -> None:
        while True:
            try:
                await periodic.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.warning("periodic task failed", extra={"task": periodic.name}, exc_info=True)
            await asyncio.sleep(periodic.interval_s)
