"""The durable job queue in Postgres (``jobs``).

Claiming uses ``FOR UPDATE SKIP LOCKED``, so any number of worker processes
can poll the same queue: each job goes to exactly one of them.  A job whose
worker died stays ``running`` until its lease runs out, then is re-queued.
``dedupe_key`` makes an enqueue idempotent while a job with that key is
queued or running (the sweeps enqueue the same work on every pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Conn

_COLUMNS = "id, kind, tenant_id, payload, status, attempts, max_attempts, run_after, last_error, dedupe_key"


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    tenant_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    attempts: int = 0
    max_attempts: int = 10
    run_after: datetime | None = None
    last_error: str | None = None
    dedupe_key: str | None = None


def _job(row: Mapping[str, Any]) -> Job:
    return Job(**{**dict(row), "payload": dict(row["payload"] or {})})


async def enqueue(
    conn: Conn,
    kind: str,
    *,
    tenant_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
    dedupe_key: str | None = None,
    delay: timedelta | None = None,
    max_attempts: int = 10,
) -> int | None:
    """Queue a job; None when ``dedupe_key`` is already queued or running."""
    cur = await conn.execute(
        """INSERT INTO jobs (kind, tenant_id, payload, dedupe_key, max_attempts, run_after)
           VALUES (%s, %s, %s, %s, %s, now() + %s)
           ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
           DO NOTHING
           RETURNING id""",
        (kind, tenant_id, Jsonb(dict(payload or {})), dedupe_key, max_attempts, delay or timedelta(0)),
    )
    row = await cur.fetchone()
    return int(row["id"]) if row else None


async def claim(conn: Conn, worker_id: str, kinds: Sequence[str]) -> Job | None:
    """Take the next due job of one of ``kinds`` (attempts counts this try)."""
    cur = await conn.execute(
        f"""UPDATE jobs SET status = 'running', locked_at = now(), locked_by = %s, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs
                          WHERE status = 'queued' AND run_after <= now() AND kind = ANY(%s)
                          ORDER BY run_after, id
                          FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING {_COLUMNS}""",
        (worker_id, list(kinds)),
    )
    row = await cur.fetchone()
    return _job(row) if row else None


async def complete(conn: Conn, job_id: int) -> None:
    await conn.execute(
        """UPDATE jobs SET status = 'succeeded', finished_at = now(), locked_at = NULL, locked_by = NULL,
                  last_error = NULL
            WHERE id = %s""",
        (job_id,),
    )


async def fail(conn: Conn, job: Job, error: str, *, retry_in: timedelta | None) -> str:
    """Record a failure: back to the queue after ``retry_in``, or ``dead`` when out of attempts
    (``failed`` when ``retry_in`` is None: the error is permanent).  Returns the new status."""
    if retry_in is None:
        status = "failed"
    elif job.attempts >= job.max_attempts:
        status = "dead"
    else:
        status = "queued"
    await conn.execute(
        """UPDATE jobs SET status = %s, last_error = %s, locked_at = NULL, locked_by = NULL,
                  run_after = CASE WHEN %s = 'queued' THEN now() + %s ELSE run_after END,
                  finished_at = CASE WHEN %s = 'queued' THEN NULL ELSE now() END
            WHERE id = %s""",
        (status, error[:2000], status, retry_in or timedelta(0), status, job.id),
    )
    return status


async def requeue_expired_leases(conn: Conn, lease: timedelta) -> int:
    """Jobs left ``running`` by a worker that died go back to the queue."""
    cur = await conn.execute(
        """UPDATE jobs SET status = 'queued', locked_at = NULL, locked_by = NULL, run_after = now()
            WHERE status = 'running' AND locked_at < now() - %s""",
        (lease,),
    )
    return cur.rowcount


async def latest(conn: Conn, kind: str, tenant_id: str) -> Job | None:
    """The newest job of a kind for a tenant, whatever its status."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE kind = %s AND tenant_id = %s ORDER BY id DESC LIMIT 1",
        (kind, tenant_id),
    )
    row = await cur.fetchone()
    return _job(row) if row else None


async def delete_queued(conn: Conn, job_id: int) -> None:
    """Drop a job that has become unnecessary (if nobody has started it)."""
    await conn.execute("DELETE FROM jobs WHERE id = %s AND status = 'queued'", (job_id,))
