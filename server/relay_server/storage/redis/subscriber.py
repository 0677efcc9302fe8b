"""One Redis pub/sub channel, listened to for as long as a worker runs.

The broadcasts every worker must act on (policy invalidations, catalog changes) share this loop:
subscribe, hand each message to ``on_message``, and after any failure reconnect with capped
exponential back-off (and, on a Sentinel-watched master, when the sentinels name a new master:
``client.master_moved``).  ``on_subscribed`` runs each time the subscription is (re)established,
before ``subscribed`` is set: messages sent while a worker was not listening are lost, so that
is where a listener catches up (reload, or forget what it cached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from relay_server.storage.redis.client import master_moved, ready
from relay_server.storage.redis.urls import RECHECK_S

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0


async def listen_forever(
    connect: Callable[[], Any],
    channel: str,
    on_message: Callable[[bytes | str], Awaitable[None]],
    *,
    on_subscribed: Callable[[], Awaitable[None] | None],
    subscribed: asyncio.Event,
    what: str,
) -> None:
    """Listen on ``channel`` until cancelled (``what`` names the listener in log lines)."""
    backoff = _FIRST_BACKOFF_S
    while True:
        client = connect()
        pubsub = None
        try:
            await ready(client)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(channel)
            caught_up = on_subscribed()
            if caught_up is not None:
                await caught_up
            subscribed.set()
            backoff = _FIRST_BACKOFF_S
            recheck_at = asyncio.get_running_loop().time() + RECHECK_S
            while True:
                message = await pubsub.get_message(timeout=RECHECK_S)
                if message is not None and message.get("type") == "message":
                    await on_message(message["data"])
                if asyncio.get_running_loop().time() >= recheck_at:
                    recheck_at = asyncio.get_running_loop().time() + RECHECK_S
                    if await master_moved(client):  # Sentinel failover: resubscribe on the new master
                        raise RedisConnectionError("the Sentinel master moved")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (keep listening whatever happened)
            subscribed.clear()
            log.warning(f"{what} subscriber lost redis; retrying", extra={"error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()
