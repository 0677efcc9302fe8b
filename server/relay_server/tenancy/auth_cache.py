"""The shared (Redis) layer of API-key authentication, and its invalidation.

* ``RedisKeyCache``: key hash → ``KeyRecord`` for ``auth_redis_ttl_s``.  A
  failing Redis turns into cache misses (lookups go to Postgres), logged once
  per outage, and reads skip Redis for a second after a failure.
* ``AuthInvalidator``: when a key or a tenant changes, forget it everywhere
  at once — this worker's in-process cache, the Redis entries, and (through
  a pub/sub message every worker subscribes to) every other worker's
  in-process cache.

Two races are closed rather than left to TTLs:
* A lookup that read Postgres just before a change commits could write the
  old record into Redis just after the purge.  Purging therefore writes a
  tombstone instead of deleting, which only a lookup that started after it
  may replace (``cache_fill``).
* A pub/sub message is delivered asynchronously.  Each subscriber therefore
  acknowledges (a Redis set per message) and the changing call waits, up to
  ``ack_timeout_s``, until every subscriber that received the message has
  purged: when the admin call returns, no worker still trusts the old state.
* If Redis is unreachable at the moment of a change, the purge cannot run.
  The change's own transaction stages an ``auth_purge`` job (outbox); it is
  deleted after a successful immediate purge and otherwise retried by the job
  runner until Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.domain.keys import KeyRecord
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.storage.postgres import jobs
from relay_server.storage.postgres.api_keys import tenant_key_hashes
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.tenancy.cache_fill import TOMBSTONE_TTL_S, fill, is_tombstone, new_tombstone

log = logging.getLogger(__name__)

CHANNEL = "relay:auth:invalidate"
PURGE_JOB = "auth_purge"
_ACK_TTL_S = 30
_DATES = ("expires_at", "grace_expires_at")


def redis_key(key_hash: str) -> str:
    # Not under a tenant hash tag: the tenant is what this entry tells us.
    return f"relay:auth:key:{key_hash}"


def encode_record(record: KeyRecord) -> bytes:
    data: dict[str, Any] = {name: getattr(record, name) for name in record.__dataclass_fields__}
    for name in ("allowed_models", "tenant_allowed_models", "plan_allowed_models"):
        data[name] = list(getattr(record, name))
    data["rate_limit_overrides"] = dict(record.rate_limit_overrides)
    for name in _DATES:
        value = data[name]
        data[name] = value.isoformat() if value is not None else None
    return orjson.dumps(data)


def decode_record(raw: bytes) -> KeyRecord:
    data = orjson.loads(raw)
    for name in ("allowed_models", "tenant_allowed_models", "plan_allowed_models"):
        data[name] = tuple(data.get(name) or ())
    for name in _DATES:
        if data.get(name):
            data[name] = datetime.fromisoformat(data[name])
    return KeyRecord(**data)


def _ack_key(nonce: str) -> str:
    return f"relay:auth:ack:{nonce}"


class RedisKeyCache:
    """The ``SharedKeyCache`` of ``pipeline.authenticate`` over Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: int = 300,
        tombstone_s: int = TOMBSTONE_TTL_S,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._ttl = ttl_s
        self._tombstone_s = tombstone_s
        self._backoff = backoff_s
        self._clock = clock
        self._down_until = 0.0
        self._down = False

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self._backoff
        if not self._down:
            self._down = True
            log.warning("redis unavailable: API-key lookups go to Postgres", extra={"error": repr(exc)})

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("redis reachable again: API-key cache back in use")

    async def get(self, key_hash: str) -> tuple[KeyRecord | None, object]:
        """(record or None, what the key held: the stamp ``put`` needs)."""
        if self._down_until > self._clock():
            return None, False
        try:
            raw = await self._redis.get(redis_key(key_hash))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None, False
        self._ok()
        if raw is None or is_tombstone(raw):  # type: ignore[arg-type]
            return None, raw
        try:
            return decode_record(raw), raw  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable API-key cache entry ignored", extra={"key_hint": key_hash[-4:]})
            return None, False

    async def put(self, record: KeyRecord, seen: object) -> None:
        if seen is False or self._down_until > self._clock():
            return  # Redis failed when this lookup started: do not write blind
        try:
            await fill(self._redis, redis_key(record.key_hash), seen, encode_record(record), self._ttl)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def purge(self, key_hashes: Sequence[str]) -> None:
        """Tombstone these entries.  Raises on Redis failure: the caller must know."""
        for start in range(0, len(key_hashes), 1000):
            pipe = self._redis.pipeline(transaction=False)
            for key_hash in key_hashes[start : start + 1000]:
                pipe.set(redis_key(key_hash), new_tombstone(), ex=self._tombstone_s)
            await pipe.execute()


class AuthInvalidator:
    """Purges cached authentication state on every worker when keys or tenants change."""

    def __init__(
        self,
        db: Database,
        authenticator: Authenticator,
        *,
        cache: RedisKeyCache | None = None,
        redis: Redis | None = None,
        subscriber: Callable[[], Redis] | None = None,
        ack_timeout_s: float = 1.0,
    ) -> None:
        self._db = db
        self._auth = authenticator
        self._cache = cache
        self._redis = redis
        self._subscriber = subscriber
        self._ack_timeout = ack_timeout_s
        self._token = secrets.token_hex(6)  # this subscriber, in acknowledgements
        self.subscribed = asyncio.Event()

    # --- the writing side -----------------------------------------------------------

    async def stage(self, conn: Conn, tenant_id: str, key_hashes: Sequence[str] | None = None) -> int | None:
        """In the change's own transaction: a durable reminder to purge (see module doc)."""
        if self._redis is None:
            return None
        payload = {"key_hashes": list(key_hashes)} if key_hashes is not None else {}
        return await jobs.enqueue(conn, PURGE_JOB, tenant_id=tenant_id, payload=payload, delay=timedelta(seconds=10), max_attempts=100)

    async def keys_changed(self, tenant_id: str, key_hashes: Sequence[str], staged: int | None = None) -> bool:
        """After commit: forget these keys everywhere.  False if Redis could not be reached."""
        for key_hash in key_hashes:
            self._auth.purge(key_hash)
        return await self._broadcast(tenant_id, list(key_hashes), staged)

    async def tenant_changed(self, tenant_id: str, staged: int | None = None) -> bool:
        """After commit: forget every key of a tenant (status, plan) everywhere."""
        self._auth.purge_tenant(tenant_id)
        return await self._broadcast(tenant_id, None, staged)

    async def _broadcast(self, tenant_id: str, key_hashes: list[str] | None, staged: int | None) -> bool:
        if self._redis is None:
            return True  # single-process mode: the local purge was everything
        try:
            if self._cache is not None:
                hashes = key_hashes
                if hashes is None:
                    async with self._db.system_tx() as conn:
                        hashes = await tenant_key_hashes(conn, tenant_id)
                await self._cache.purge(hashes)
            nonce = secrets.token_hex(8)
            message = {"k": key_hashes} if key_hashes is not None else {"t": tenant_id}
            receivers = await self._redis.publish(CHANNEL, orjson.dumps({**message, "ack": nonce}))
            await self._await_acks(nonce, int(receivers))
        except (RedisError, OSError) as exc:
            log.warning(
                "auth cache purge failed; the staged job retries it", extra={"tenant_id": tenant_id, "error": repr(exc)}
            )
            return False
        if staged is not None:
            with contextlib.suppress(Exception):  # only tidiness: a redundant purge is harmless
                async with self._db.system_tx() as conn:
                    await jobs.delete_queued(conn, staged)
        return True

    async def _await_acks(self, nonce: str, receivers: int) -> None:
        """Wait until every worker that got the message has purged (bounded)."""
        assert self._redis is not None
        key = _ack_key(nonce)
        deadline = time.monotonic() + self._ack_timeout
        while receivers > 0:
            if int(await self._redis.scard(key)) >= receivers:
                return
            if time.monotonic() > deadline:
                log.warning("not every worker acknowledged an auth purge in time", extra={"expected": receivers})
                return
            await asyncio.sleep(0.002)

    async def run_job(self, job: jobs.Job) -> None:
        """The ``auth_purge`` job: retry a purge that could not run at change time."""
        assert job.tenant_id is not None
        hashes = job.payload.get("key_hashes")
        done = await (self.keys_changed(job.tenant_id, hashes) if hashes is not None else self.tenant_changed(job.tenant_id))
        if not done:
            raise RuntimeError("redis unavailable: auth cache purge postponed")

    # --- the listening side -----------------------------------------------------------

    async def on_message(self, data: bytes | str) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("malformed auth invalidation message ignored")
            return
        if "t" in message:
            self._auth.purge_tenant(str(message["t"]))
        for key_hash in message.get("k") or ():
            self._auth.purge(str(key_hash))
        nonce = message.get("ack")
        if isinstance(nonce, str) and self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.sadd(_ack_key(nonce), self._token)
                pipe.expire(_ack_key(nonce), _ACK_TTL_S)
                await pipe.execute()
            except (RedisError, OSError) as exc:  # the sender stops waiting at its timeout
                log.warning("could not acknowledge an auth purge", extra={"error": repr(exc)})

    async def run_subscriber(self) -> None:
        """Listen for purges from other workers until cancelled; reconnect on failure."""
        if self._subscriber is None:
            return
        backoff = 0.1
        while True:
            client = self._subscriber()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                # Messages sent while this worker was not subscribed are lost:
                # forget everything cached rather than trust it.
                self._auth.purge()
                self.subscribed.set()
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self.on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (keep listening whatever happened)
                self.subscribed.clear()
                log.warning("auth invalidation subscriber lost redis; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
