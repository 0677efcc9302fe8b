"""Relay's SQL over the durable job queue (procrastinate's tables, migration 0021).

Jobs are queued from Relay's own connections, inside the caller's
transaction, through ``relay_defer_job`` (so a job is committed, or rolled
back, with the change that asked for it), and run by procrastinate workers
(``workers/runner.py``).  A job's kind is its task name and its queue.
``dedupe_key`` makes an enqueue idempotent while a job with that key waits
(the sweeps queue the same work on every pass), and runs jobs sharing it one
at a time across every node.

Job arguments are ``{"tenant_id": ..., "payload": {...}}``: identifiers and
hashes, never a secret (they are stored in plain text and shown by admin tools).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Conn

# procrastinate's statuses, as Relay has always named them.
STATUS_NAMES = {"todo": "queued", "doing": "running", "succeeded": "succeeded", "failed": "failed",
                "cancelled": "cancelled", "aborting": "running", "aborted": "failed"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Job:
    """A job as its handler sees it."""

    id: int
    kind: str
    tenant_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    attempts: int = 0
    """Tries so far; inside a handler, this try included (the first run sees 1)."""


def job_args(tenant_id: str | None, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "payload": dict(payload or {})}


async def enqueue(
    conn: Conn,
    kind: str,
    *,
    tenant_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
    dedupe_key: str | None = None,
    delay: timedelta | None = None,
) -> int | None:
    """Queue a job in ``conn``'s transaction; None when ``dedupe_key`` is already waiting."""
    cur = await conn.execute(
        "SELECT relay_defer_job(%s, %s, %s, CASE WHEN %s::interval > interval '0' THEN now() + %s::interval END) AS id",
        (kind, dedupe_key, Jsonb(job_args(tenant_id, payload)), delay or timedelta(0), delay or timedelta(0)),
    )
    row = await cur.fetchone()
    return int(row["id"]) if row and row["id"] is not None else None


def _job(row: Mapping[str, Any]) -> Job:
    args = row["args"] or {}
    return Job(
        id=int(row["id"]),
        kind=row["task_name"],
        tenant_id=args.get("tenant_id"),
        payload=dict(args.get("payload") or {}),
        status=STATUS_NAMES.get(row["status"], row["status"]),
        attempts=int(row["attempts"]),
    )


async def latest(conn: Conn, kind: str, tenant_id: str) -> Job | None:
    """The newest job of a kind for a tenant, whatever its status."""
    cur = await conn.execute(
        """SELECT id, task_name, args, status::text AS status, attempts FROM procrastinate_jobs
            WHERE task_name = %s AND args ->> 'tenant_id' = %s ORDER BY id DESC LIMIT 1""",
        (kind, tenant_id),
    )
    row = await cur.fetchone()
    return _job(row) if row else None


async def delete_queued(conn: Conn, job_id: int) -> None:
    """Drop a job that has become unnecessary (if nobody has started it)."""
    await conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, true)", (job_id,))


async def retry_stalled(conn: Conn, heartbeat_older_than: timedelta) -> int:
    """Jobs left running by a worker that died (no heartbeat for that long, or
    its row pruned) go back to the queue, due now."""
    cur = await conn.execute(
        """SELECT procrastinate_retry_job_v2(j.id, now(), j.priority, j.queue_name, j.lock)
             FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
            WHERE j.status = 'doing' AND (w.id IS NULL OR w.last_heartbeat < now() - %s)""",
        (heartbeat_older_than,),
    )
    return cur.rowcount
