"""Relay's job kinds and periodic sweeps as a procrastinate ``App``.

* Each job kind is a task of the same name on a queue of the same name: a
  worker fetches only the kinds its process registered, so a job nobody here
  handles waits for a process that does.
* Retries: exponential back-off (``default_backoff``) up to the kind's
  ``max_attempts``; ``PermanentJobError`` fails the job at once.
* Periodic sweeps are procrastinate periodic tasks, each on its own queue
  (``periodic.<name>``, only processes that registered it fetch it): each tick
  is deferred once for the whole cluster (procrastinate records the tick),
  runs on one worker, and a lock keeps two ticks of one sweep from overlapping
  across nodes.  The
  interval becomes a cron schedule (seconds are a cron field): intervals under
  a minute run on the second steps of each minute, longer ones on minute steps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import procrastinate
from procrastinate import JobContext, PsycopgConnector, RetryDecision

from relay_server.storage.postgres.jobs import Job

log = logging.getLogger(__name__)

JobHandler = Callable[[Job], Awaitable[None]]


class PermanentJobError(Exception):
    """Retrying cannot help (the tenant is gone, the payload is unusable)."""


def default_backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s, … capped at 5 minutes (``attempts``: tries so far)."""
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), 300))


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    interval_s: float
    run: Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Kind:
    handler: JobHandler
    max_attempts: int = 10


class _Retry(procrastinate.BaseRetryStrategy):
    def __init__(self, max_attempts: int, backoff: Callable[[int], timedelta]) -> None:
        self._max_attempts = max_attempts
        self._backoff = backoff

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job) -> RetryDecision | None:
        tries = job.attempts + 1  # procrastinate counts the tries before this one
        if isinstance(exception, PermanentJobError) or tries >= self._max_attempts:
            return None
        if isinstance(exception, (asyncio.CancelledError, procrastinate.exceptions.JobAborted)):
            # Cut short by a worker shutting down: not the job's fault, hand it to another worker now.
            return RetryDecision(retry_at=datetime.now(UTC))
        return RetryDecision(retry_at=datetime.now(UTC) + self._backoff(tries))


def periodic_queue(sweep: Periodic) -> str:
    return f"periodic.{sweep.name}"


def cron_for(interval_s: float) -> str:
    """A cron schedule (seconds as the 6th field) close to ``interval_s``."""
    seconds = max(1, round(interval_s))
    if seconds < 60:
        return f"* * * * * */{seconds}"
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *"
    return f"0 */{min(24, round(minutes / 60))} * * *"


def build_app(
    dsn: str,
    kinds: dict[str, Kind],
    periodic: list[Periodic],
    *,
    backoff: Callable[[int], timedelta] = default_backoff,
    on_run: Callable[[], None] = lambda: None,
    pool_max: int = 4,
) -> procrastinate.App:
    """An App (not opened) with a pool of its own on the owner DSN."""
    connector = PsycopgConnector(
        conninfo=dsn, min_size=1, max_size=pool_max, kwargs={"application_name": "relay-jobs"}, name="relay-jobs"
    )
    app = procrastinate.App(connector=connector)
    for kind, spec in kinds.items():
        app.task(name=kind, queue=kind, pass_context=True, retry=_Retry(spec.max_attempts, backoff))(
            _job_task(kind, spec, on_run)
        )
    for sweep in periodic:
        task = app.task(name=periodic_queue(sweep), queue=periodic_queue(sweep), lock=periodic_queue(sweep))(
            _periodic_task(sweep)
        )
        app.periodic(cron=cron_for(sweep.interval_s))(task)
    return app


def _job_task(kind: str, spec: Kind, on_run: Callable[[], None]) -> Callable[..., Awaitable[None]]:
    async def run(context: JobContext, tenant_id: str | None = None, payload: dict[str, Any] | None = None) -> None:
        assert context.job.id is not None
        job = Job(context.job.id, kind, tenant_id, dict(payload or {}), "running", context.job.attempts + 1)
        on_run()
        try:
            await spec.handler(job)
        except Exception as exc:
            final = isinstance(exc, PermanentJobError) or job.attempts >= spec.max_attempts
            log.log(logging.ERROR if final else logging.WARNING, "job failed", extra={
                "job_id": job.id, "kind": kind, "tenant_id": tenant_id, "attempts": job.attempts,
                "status": "failed" if final else "retrying", "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
            raise

    run.__name__ = run.__qualname__ = kind
    return run


def _periodic_task(sweep: Periodic) -> Callable[..., Awaitable[None]]:
    async def run(timestamp: int) -> None:
        try:
            await sweep.run()
        except Exception:  # noqa: BLE001 (the next tick runs it again; no retry pile-up)
            log.warning("periodic task failed", extra={"task": sweep.name}, exc_info=True)

    run.__name__ = run.__qualname__ = f"periodic_{sweep.name}".replace("-", "_")
    return run
