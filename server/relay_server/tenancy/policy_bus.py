"""The invalidation bus of the tenant-policy caches: an admin change reaches
every worker before the admin call returns.

A change is a list of ``(scope, id)`` tags (``cache/policy_cache.py``):

  key          an API key changed (its id and its hash are both sent: the
               authenticator knows a key by hash, limits by id)
  tenant       status, plan or anything else about the tenant
  config       the tenant's configuration or feature overrides
  credentials  the tenant's provider credentials (id ``""``: pooled keys)
  plan         plan definitions (quotas, features), id ``""``

After commit, ``publish``:
1. drops the tags from this worker's caches (every ``register``-ed cache);
2. tombstones the shared (Redis) API-key entries the change touches;
3. publishes ``{"c": [[scope, id], …], "ack": nonce}`` on ``CHANNEL``; every
   worker's subscriber drops the tags from its caches and acknowledges (a
   Redis set per message); the publisher waits, up to ``ack_timeout_s``,
   until every subscriber that received the message has done so.

Two races are closed rather than left to TTLs:
* A lookup that read Postgres just before a change commits could write the
  old record into Redis just after the purge: purging writes a tombstone that
  only a lookup started after it may replace (``cache_fill``); in memory, an
  invalidation detaches loads in flight (``PolicyCache``).
* If Redis is unreachable at the moment of a change, the message cannot go
  out.  The change's own transaction stages a ``PURGE_JOB`` (outbox); it is
  deleted after a successful publish and otherwise retried by the job runner
  until Redis answers.
A subscriber that (re)connects clears every cache: messages sent while it was
not listening are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.cache.policy_cache import SCOPES, Tag
from relay_server.storage.postgres import jobs
from relay_server.storage.postgres.api_keys import tenant_key_hashes
from relay_server.storage.postgres.plans import key_hashes_on_plan
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.storage.redis.client import publish
from relay_server.storage.redis.subscriber import listen_forever
from relay_server.tenancy.auth_cache import RedisKeyCache

log = logging.getLogger(__name__)

CHANNEL = "relay:policy:invalidate"
PURGE_JOB = "policy_purge"
LEGACY_PURGE_JOB = "auth_purge"  # staged by earlier versions: key hashes, or the whole tenant
_ACK_TTL_S = 30


class Invalidatable(Protocol):
    def invalidate(self, scope: str, ident: str = "") -> int: ...

    def clear(self) -> None: ...


def _ack_key(nonce: str) -> str:
    return f"relay:policy:ack:{nonce}"


def key_tags(key_ids: Iterable[str], key_hashes: Iterable[str]) -> list[Tag]:
    return [("key", i) for i in key_ids] + [("key", h) for h in key_hashes]


class PolicyBus:
    def __init__(
        self,
        db: Database,
        *,
        key_cache: RedisKeyCache | None = None,
        redis: Redis | None = None,
        subscriber: Callable[[], Redis] | None = None,
        ack_timeout_s: float = 1.0,
    ) -> None:
        self._db = db
        self._key_cache = key_cache
        self._redis = redis
        self._subscriber = subscriber
        self._ack_timeout = ack_timeout_s
        self._caches: list[Invalidatable] = []
        self._token = secrets.token_hex(6)  # this subscriber, in acknowledgements
        self.subscribed = asyncio.Event()

    def register(self, *caches: Invalidatable) -> None:
        self._caches.extend(caches)

    @property
    def caches(self) -> list[Invalidatable]:
        return list(self._caches)

    def apply_locally(self, changes: Iterable[Tag]) -> None:
        for scope, ident in changes:
            if scope not in SCOPES:
                log.warning("unknown invalidation scope ignored", extra={"scope": scope})
                continue
            for cache in self._caches:
                cache.invalidate(scope, ident)

    def clear_locally(self) -> None:
        for cache in self._caches:
            cache.clear()

    # --- the writing side -----------------------------------------------------------

    async def stage(
        self,
        conn: Conn,
        tenant_id: str | None,
        changes: Sequence[Tag],
        key_hashes: Sequence[str] | None = None,
        *,
        plan_keys: str | None = None,
    ) -> int | None:
        """In the change's own transaction: a durable reminder to publish (see module doc)."""
        if self._redis is None:
            return None
        payload: dict[str, object] = {"changes": [list(c) for c in changes]}
        if key_hashes:
            payload["key_hashes"] = list(key_hashes)
        if plan_keys:
            payload["plan_keys"] = plan_keys
        return await jobs.enqueue(conn, PURGE_JOB, tenant_id=tenant_id, payload=payload, delay=timedelta(seconds=10))

    async def publish(
        self,
        tenant_id: str | None,
        changes: Sequence[Tag],
        *,
        key_hashes: Sequence[str] = (),
        staged: int | None = None,
        plan_keys: str | None = None,
    ) -> bool:
        """After commit: apply ``changes`` on every worker.  False if Redis could not be reached.
        ``plan_keys``: a plan whose tenants' shared key records are stale too (they carry the
        plan's allowed models); their hashes are read now, like a tenant change's."""
        changes = [(str(s), str(i)) for s, i in changes]
        self.apply_locally(changes)
        if self._redis is None:
            return True  # single-process mode: the local purge was everything
        try:
            await self._purge_shared_keys(tenant_id, changes, key_hashes, plan_keys)
            nonce = secrets.token_hex(8)
            receivers = await publish(self._redis, CHANNEL, orjson.dumps({"c": changes, "ack": nonce}))
            await self._await_acks(nonce, int(receivers))
        except (RedisError, OSError) as exc:
            log.warning("policy cache purge failed; the staged job retries it", extra={"tenant_id": tenant_id, "error": repr(exc)})
            return False
        if staged is not None:
            with contextlib.suppress(Exception):  # only tidiness: a redundant purge is harmless
                async with self._db.system_tx() as conn:
                    await jobs.delete_queued(conn, staged)
        return True

    async def keys_changed(
        self, tenant_id: str, key_ids: Sequence[str], key_hashes: Sequence[str], staged: int | None = None
    ) -> bool:
        return await self.publish(tenant_id, key_tags(key_ids, key_hashes), key_hashes=key_hashes, staged=staged)

    async def tenant_changed(self, tenant_id: str, staged: int | None = None) -> bool:
        return await self.publish(tenant_id, [("tenant", tenant_id)], staged=staged)

    async def config_changed(self, tenant_id: str, staged: int | None = None) -> bool:
        return await self.publish(tenant_id, [("config", tenant_id)], staged=staged)

    async def credentials_changed(self, owner: str | None) -> bool:
        """A provider credential changed: ``owner`` None is a pooled key, which every tenant routes to."""
        return await self.publish(owner, [("credentials", owner or "")])

    async def _purge_shared_keys(
        self, tenant_id: str | None, changes: Sequence[Tag], key_hashes: Sequence[str], plan_keys: str | None
    ) -> None:
        if self._key_cache is None:
            return
        hashes = list(key_hashes)
        if tenant_id is not None and any(s in ("tenant", "config") for s, _ in changes):
            # A key's shared record carries its tenant's status, plan and config.
            async with self._db.system_tx() as conn:
                hashes += await tenant_key_hashes(conn, tenant_id)
        if plan_keys:
            async with self._db.system_tx() as conn:
                hashes += await key_hashes_on_plan(conn, plan_keys)
        if hashes:
            await self._key_cache.purge(hashes)

    async def _await_acks(self, nonce: str, receivers: int) -> None:
        """Wait until every worker that got the message has purged (bounded)."""
        assert self._redis is not None
        key = _ack_key(nonce)
        deadline = time.monotonic() + self._ack_timeout
        while receivers > 0:
            if int(await self._redis.scard(key)) >= receivers:
                return
            if time.monotonic() > deadline:
                log.warning("not every worker acknowledged a policy purge in time", extra={"expected": receivers})
                return
            await asyncio.sleep(0.002)

    async def run_job(self, job: jobs.Job) -> None:
        """The ``PURGE_JOB``: retry a publish that could not run at change time."""
        hashes = job.payload.get("key_hashes") or ()
        if "changes" in job.payload:
            changes = [(str(s), str(i)) for s, i in job.payload["changes"]]
        else:  # LEGACY_PURGE_JOB
            changes = [("key", h) for h in hashes] if hashes else [("tenant", str(job.tenant_id))]
        plan_keys = job.payload.get("plan_keys") or None
        if not await self.publish(job.tenant_id, changes, key_hashes=hashes, plan_keys=plan_keys):
            raise RuntimeError("redis unavailable: policy cache purge postponed")

    # --- the listening side -----------------------------------------------------------

    async def on_message(self, data: bytes | str) -> None:
        try:
            message = orjson.loads(data)
            changes = [(str(s), str(i)) for s, i in message.get("c") or ()]
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.warning("malformed policy invalidation message ignored")
            return
        self.apply_locally(changes)
        nonce = message.get("ack")
        if isinstance(nonce, str) and self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.sadd(_ack_key(nonce), self._token)
                pipe.expire(_ack_key(nonce), _ACK_TTL_S)
                await pipe.execute()
            except (RedisError, OSError) as exc:  # the sender stops waiting at its timeout
                log.warning("could not acknowledge a policy purge", extra={"error": repr(exc)})

    async def run_subscriber(self) -> None:
        """Listen for purges from other workers until cancelled; reconnect on failure."""
        if self._subscriber is None:
            return
        # Messages sent while this worker was not subscribed are lost: on (re)subscribing it
        # forgets everything cached rather than trust it.
        await listen_forever(
            self._subscriber, CHANNEL, self.on_message, on_subscribed=self.clear_locally, subscribed=self.subscribed,
            what="policy invalidation",
        )
