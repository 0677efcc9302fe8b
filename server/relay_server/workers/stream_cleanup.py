"""Finalizing dangling thread replies (their writer died), and dropping expired
semantic cache entries.

A reply's writer renews a lease in Redis every few seconds while it works
(``threads/runner.py``).  A lease that ran out means the writer is gone — the
process crashed or was killed mid-reply.  This worker then persists what the
buffer holds as the reply's content with status ``failed`` ("interrupted"),
and appends the terminal ``thread.message.failed`` event so that clients
following the stream stop waiting.  Finalizing is guarded by
``status = 'streaming'`` and a row lock (``SKIP LOCKED``), so several server
processes can run this at once, and a writer that was merely slow finds its
reply already finalized and stops.

Leases live in Redis; should Redis lose them, an occasional Postgres sweep
finds replies streaming for longer than any live writer would go without a
lease.  Runs on the owner connection (every tenant).
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from relay_server.storage.postgres import response_cache as pg_cache
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.stream_buffer import BufferClosed, RedisStreamBuffer
from relay_server.threads import events
from relay_server.threads.render import message_json
from relay_server.threads.runner import INTERRUPTED, LEASE_S

log = logging.getLogger(__name__)

INTERVAL_S = 10.0
_SWEEP_EVERY = 30  # rounds between Postgres sweeps (and expired cache purges)
_BATCH = 100


class StreamCleanup:
    def __init__(self, db: Database, buffer: RedisStreamBuffer, *, lease_s: float = LEASE_S) -> None:
        self._db = db
        self._buffer = buffer
        self._lease_s = lease_s
        self._round = 0

    async def run_once(self) -> int:
        """One pass; returns how many replies it finalized."""
        candidates = await self._buffer.expired_leases(limit=_BATCH)
        if self._round % _SWEEP_EVERY == 0:
            async with self._db.system_tx() as conn:
                # A live writer renews its lease every lease_s / 3: twice the lease without one is dead.
                candidates += await store.streaming_any_tenant(conn, older_than_s=2 * self._lease_s, limit=_BATCH)
                purged = await pg_cache.delete_expired(conn)
            if purged:
                log.info("expired semantic cache entries removed", extra={"count": purged})
        self._round += 1
        finalized = 0
        for tenant_id, message_id in dict.fromkeys(candidates):
            try:
                finalized += await self.reap(tenant_id, message_id)
            except (RedisError, OSError):
                log.warning("stream cleanup: Redis unavailable; will retry", exc_info=True)
                break
        return finalized

    async def reap(self, tenant_id: str, message_id: str) -> bool:
        """Finalize one reply if its writer is gone; False if it was alive or already finished."""
        if await self._buffer.has_lease(tenant_id, message_id):
            return False
        async with self._db.system_tx() as conn:
            row = await store.lock_streaming_any_tenant(conn, message_id)
            if row is None:
                await self._buffer.release_lease(tenant_id, message_id)
                return False
            buffered = await events.buffered(self._buffer, tenant_id, message_id)
            content = events.partial_blocks([e.payload for e in buffered])
            final = await store.finish_message(
                conn, message_id, status="failed", content=content, input_tokens=None, output_tokens=None,
                error=INTERRUPTED,
            )
        if final is None:
            return False
        payload = events.failed(message_json(final), {"message": INTERRUPTED, "type": "server_error", "param": None, "code": "interrupted"})
        for _ in range(3):  # a late writer may take the slot first; append after it
            try:
                await self._buffer.append(tenant_id, message_id, await self._buffer.last_index(tenant_id, message_id) + 1, payload)
                break
            except BufferClosed:
                continue
        await self._buffer.release_lease(tenant_id, message_id)
        log.warning("finalized a dangling thread reply", extra={"tenant_id": tenant_id, "message_id": message_id})
        return True
