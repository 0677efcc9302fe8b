"""Webhook delivery: POST each pending event to the tenant's URL, signed.

Body: ``{"id", "type", "created", "data"}``.  Headers: ``x-relay-event-id``,
``x-relay-event-type``, ``x-relay-delivery-attempt`` and
``x-relay-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
— receivers recompute the HMAC over the raw body and reject old timestamps.
The secret is the tenant's ``webhook_secret`` (tenant_config), else one
derived from the ``webhook_signing_key`` setting and the tenant id.  Any 2xx
is success; anything else is retried with exponential backoff up to
``max_attempts``, then the delivery is ``dead``.  Claims use SKIP LOCKED and a
lease, so several processes deliver each event once (at least once if a
process dies mid-delivery: receivers dedupe on the event id).

Destinations are checked on every attempt (``webhook_destinations``): a URL
that reaches a loopback, private, link-local or otherwise internal address is
refused before any byte is sent, and the delivery is ``dead`` at once with the
reason — retrying would meet the same rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING

import orjson
from yarl import URL

from relay_server.address_policy import check_host
from relay_server.storage.postgres.webhooks import Delivery, WebhookStore

if TYPE_CHECKING:
    import aiohttp

    from relay_server.webhook_destinations import GuardedResolver

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-relay-signature"
_TIMEOUT_S = {"total": 10, "connect": 5}
# aiohttp (~10 MB resident) is imported when the first delivery is sent, not when a worker
# starts: most workers of most deployments never send a webhook.


def derived_secret(signing_key: str, tenant_id: str) -> str:
    return hmac.new(signing_key.encode(), f"relay-webhook:{tenant_id}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does (used by tests; documented in docs/metering.md)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        *,
        signing_key: str = "",
        max_attempts: int = 12,
        batch: int = 20,
        allow_private: bool = False,
    ) -> None:
        self._store = store
        self._signing_key = signing_key
        self._max_attempts = max_attempts
        self._batch = batch
        self._allow_private = allow_private  # loopback/private destinations (settings.private_destinations_allowed)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:  # the connector does not close a resolver it was given
            await self._resolver.close()
            self._resolver = None

    def _client(self) -> aiohttp.ClientSession:
        # Built on first use: the resolver needs the running loop.
        if self._session is None:
            import aiohttp  # noqa: PLC0415 (lazy: see _TIMEOUT_S)

            from relay_server.webhook_destinations import GuardedResolver  # noqa: PLC0415

            self._resolver = GuardedResolver(allow_private=self._allow_private)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=self._resolver),
                timeout=aiohttp.ClientTimeout(**_TIMEOUT_S),
                # A proxy from the environment would resolve the destination itself, past the guard.
                trust_env=False,
            )
        return self._session

    async def run_once(self) -> int:
        """Deliver what is due; returns how many deliveries were attempted."""
        deliveries = await self._store.claim(self._batch)
        if deliveries:
            await asyncio.gather(*(self._deliver(d) for d in deliveries))
        return len(deliveries)

    async def _deliver(self, delivery: Delivery) -> None:
        secret = await self._store.secret(delivery.tenant_id)
        if secret is None and self._signing_key:
            secret = derived_secret(self._signing_key, delivery.tenant_id)
        if secret is None:
            await self._store.failed(
                delivery, "no signing secret: set the tenant's webhook_secret", None, max_attempts=self._max_attempts
            )
            return
        body = orjson.dumps(
            {"id": delivery.event_id, "type": delivery.event_type, "created": int(delivery.created_at.timestamp()),
             "data": delivery.payload}
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "Relay-Webhooks/1",
            "x-relay-event-id": delivery.event_id,
            "x-relay-event-type": delivery.event_type,
            "x-relay-delivery-attempt": str(delivery.attempts),
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        }
        import aiohttp  # noqa: PLC0415 (lazy: see _TIMEOUT_S)

        from relay_server.webhook_destinations import refusal_of  # noqa: PLC0415

        try:
            # Parsed once, by aiohttp's own URL type, so the host judged is the host dialled.
            url = URL(delivery.url)
            # IP-literal hosts never reach the resolver in aiohttp: judge them here.
            check_host(url.raw_host or "", allow_private=self._allow_private)
            # No redirects: a 30x could point anywhere, past the checks.
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            refused = refusal_of(exc)
            if refused is not None:
                # Dead at once (this attempt counts as the last): the same rule would refuse every retry.
                await self._store.failed(delivery, refused, None, max_attempts=delivery.attempts)
                log.warning("webhook destination refused", extra={"event_id": delivery.event_id, "reason": refused})
                return
            outcome = await self._store.failed(delivery, repr(exc), None, max_attempts=self._max_attempts)
            log.info("webhook delivery failed", extra={"event_id": delivery.event_id, "outcome": outcome})
            return
        if 200 <= status < 300:
            await self._store.delivered(delivery.id, status)
            return
        outcome = await self._store.failed(delivery, f"HTTP {status}", status, max_attempts=self._max_attempts)
        log.info("webhook delivery refused", extra={"event_id": delivery.event_id, "status": status, "outcome": outcome})
