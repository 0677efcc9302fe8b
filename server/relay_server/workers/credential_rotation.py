"""Master-key rotation: re-wrap every credential's data key under the current key.

How to rotate: set the new key as ``RELAY_MASTER_KEY``, move the old one to
``RELAY_OLD_MASTER_KEYS``, restart.  A server whose keyring has retired keys
runs this job once at start-up (one process at a time: a Postgres advisory
lock); ``python -m relay_server.workers.credential_rotation`` runs it by hand.
When ``rotate_master_key`` reports nothing left, drop the old key.

The job walks the rows of each retired key in id order, ``batch_size`` rows
per transaction.  Each transaction re-wraps its rows *and* advances the run's
checkpoint (``credential_rotation_checkpoints``), so an interrupted run
resumes after the last committed row.  Only data keys are unwrapped here;
the secrets themselves are never decrypted (their ciphertext does not change).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relay_server.crypto.envelope import DecryptionError, rewrap
from relay_server.crypto.keyring import Keyring
from relay_server.ids import new_id
from relay_server.storage.postgres import credentials as store
from relay_server.storage.postgres.pool import Database

log = logging.getLogger(__name__)

_LOCK = "relay-credential-rotation"


class RotationError(Exception):
    """A row cannot be re-wrapped (its master key is missing, or it is corrupt)."""


@dataclass
class RotationReport:
    skipped: bool = False  # another process holds the rotation lock
    runs: list[str] = field(default_factory=list)
    rows: int = 0


async def _run_for(
    db: Database,
    keyring: Keyring,
    from_id: str,
    report: RotationReport,
    batch_size: int,
    after_batch: Callable[[str, int], Awaitable[None]] | None,
) -> None:
    to_id = keyring.current.id
    async with db.system_tx() as conn:
        running = await store.running_checkpoints(conn, from_id)
        run = next((c for c in running if c.to_master_key_id == to_id), None)
        for stale in running:
            if stale is not run:  # the current key changed since that run started
                await store.end_checkpoint(conn, stale.id, "failed", f"superseded by a rotation to {to_id}")
        if run is None:
            run = await store.start_checkpoint(conn, new_id("rot"), from_id, to_id)
    report.runs.append(run.id)
    cursor = run.last_credential_id
    if cursor:
        log.info("resuming credential rotation", extra={"run_id": run.id, "after": cursor, "done": run.rows_done})
    while True:
        try:
            async with db.system_tx() as conn:
                batch = await store.wrapped_batch(conn, from_id, cursor, batch_size)
                if not batch:
                    await store.end_checkpoint(conn, run.id, "completed")
                    return
                for row in batch:
                    wrapped, master_id = rewrap(keyring, row.dek_wrapped, row.master_key_id, row.id)
                    await store.set_wrapped(conn, row.id, wrapped, master_id)
                cursor = batch[-1].id
                await store.advance_checkpoint(conn, run.id, cursor, len(batch))
        except DecryptionError as exc:
            async with db.system_tx() as conn:
                await store.end_checkpoint(conn, run.id, "failed", str(exc))
            raise RotationError(str(exc)) from None
        report.rows += len(batch)
        if after_batch is not None:
            await after_batch(run.id, report.rows)


async def rotate_master_key(
    db: Database,
    keyring: Keyring,
    *,
    batch_size: int = 100,
    after_batch: Callable[[str, int], Awaitable[None]] | None = None,
) -> RotationReport:
    """Re-wrap every row not under the current master key; resumes earlier runs.

    ``after_batch(run_id, rows_so_far)`` runs after each committed batch
    (progress reporting; tests interrupt the job there).
    """
    report = RotationReport()
    async with db.system.connection() as lock_conn:
        cur = await lock_conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS ok", (_LOCK,))
        row = await cur.fetchone()
        if not (row and row["ok"]):
            report.skipped = True
            return report
        try:
            async with db.system_tx() as conn:
                counts = await store.master_key_ids(conn)
            for from_id in sorted(k for k in counts if k != keyring.current.id):
                if from_id not in keyring.ids:
                    raise RotationError(
                        f"{counts[from_id]} credential(s) are wrapped by master key {from_id!r}, which is not in "
                        f"the keyring: add it to RELAY_OLD_MASTER_KEYS"
                    )
                await _run_for(db, keyring, from_id, report, batch_size, after_batch)
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_LOCK,))
    if report.rows:
        log.info("credential rotation done", extra={"rows": report.rows, "runs": report.runs})
    return report


async def rotate_in_background(db: Database, keyring: Keyring) -> None:
    """The start-up job (a runner loop): rotate once, log instead of crashing the worker."""
    try:
        await rotate_master_key(db, keyring)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 (the checkpoint keeps the progress; an operator reads the log)
        log.exception("credential rotation failed; it resumes at the next start")


async def _main() -> int:
    from relay_server.settings import Settings  # noqa: PLC0415 (command-line entry only)

    settings = Settings.from_env()
    keyring = Keyring.parse(settings.master_key, settings.old_master_keys)
    if keyring is None:
        print("RELAY_MASTER_KEY is not set")
        return 2
    async with Database.from_settings(settings) as db:
        report = await rotate_master_key(db, keyring)
    print("another process is rotating" if report.skipped else f"re-wrapped {report.rows} credential(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main()))
