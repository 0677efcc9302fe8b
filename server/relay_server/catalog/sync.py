"""Every worker serves the catalog an operator just changed, without a restart.

Each worker keeps the catalog and the provider directory in memory
(``pipeline/catalog.py``, ``pipeline/provider_directory.py``), reloaded every
30 s.  After a committed change, ``changed()`` reloads this worker's copies,
then publishes on a Redis channel every worker subscribes to; each subscriber
reloads and acknowledges (a Redis set per message), and ``changed()`` waits,
up to ``ack_timeout_s``, until every receiver has: when the admin call
returns, the next request on any worker sees the change.

A worker that was not subscribed when a message went out (start-up, Redis
blip) reloads on every (re)subscription; the periodic reload bounds anything
else.  Without Redis (one process) the local reload is everything.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay_server.storage.redis.client import publish
from relay_server.storage.redis.subscriber import listen_forever

log = logging.getLogger(__name__)

CHANNEL = "relay:catalog:changed"
_ACK_TTL_S = 30


def _ack_key(nonce: str) -> str:
    return f"relay:catalog:ack:{nonce}"


class CatalogSync:
    def __init__(
        self,
        reloads: Sequence[Callable[[], Awaitable[None]]],
        *,
        redis: Redis | None = None,
        subscriber: Callable[[], Redis] | None = None,
        ack_timeout_s: float = 10.0,  # generous: a reload on a loaded node can take seconds
    ) -> None:
        self._reloads = list(reloads)
        self._redis = redis
        self._subscriber = subscriber
        self._ack_timeout = ack_timeout_s
        self._token = secrets.token_hex(6)
        self.subscribed = asyncio.Event()

    async def reload(self) -> None:
        for load in self._reloads:
            await load()

    async def changed(self) -> None:
        """After commit: reload here, and on every other worker (bounded wait).

        Never raises: the change is committed whatever happens here, and the
        periodic reload catches up with anything this could not do.
        """
        try:
            await self.reload()
        except Exception:  # noqa: BLE001
            log.warning("catalog reload after a change failed; the periodic reload retries", exc_info=True)
        if self._redis is None:
            return
        try:
            nonce = secrets.token_hex(8)
            receivers = await publish(self._redis, CHANNEL, orjson.dumps({"ack": nonce, "from": self._token}))
            await self._await_acks(nonce, receivers)
        except (RedisError, OSError) as exc:
            # The change is committed; other workers pick it up at their periodic reload.
            log.warning("catalog change not broadcast; other workers reload within 30 s", extra={"error": repr(exc)})

    async def _await_acks(self, nonce: str, receivers: int) -> None:
        assert self._redis is not None
        deadline = time.monotonic() + self._ack_timeout
        while receivers > 0:
            if int(await self._redis.scard(_ack_key(nonce))) >= receivers:
                return
            if time.monotonic() > deadline:
                log.warning("not every worker acknowledged a catalog change in time", extra={"expected": receivers})
                return
            await asyncio.sleep(0.002)

    async def on_message(self, data: bytes | str) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("malformed catalog change message ignored")
            return
        if message.get("from") != self._token:  # the sender reloaded already
            try:
                await self.reload()
            except Exception:  # noqa: BLE001 (keep the last good copy; the periodic reload retries)
                log.warning("catalog reload after a change failed", exc_info=True)
        nonce = message.get("ack")
        if isinstance(nonce, str) and self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.sadd(_ack_key(nonce), self._token)
                pipe.expire(_ack_key(nonce), _ACK_TTL_S)
                await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not acknowledge a catalog change", extra={"error": repr(exc)})

    async def run_subscriber(self) -> None:
        """Listen for changes until cancelled; reconnect (and reload) after a failure."""
        if self._subscriber is None:
            return

        # Reload on every subscription, the first included: a change committed
        # between the start-up load and the first SUBSCRIBE was announced to
        # nobody here (PUBLISH did not count this worker as a receiver).
        await listen_forever(
            self._subscriber, CHANNEL, self.on_message, on_subscribed=self.reload, subscribed=self.subscribed,
            what="catalog change",
        )
