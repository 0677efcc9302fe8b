"""The provider health monitor: probes providers and records status changes.

Every ``health_probe_interval_s`` one worker (a Redis lease; every worker if
Redis is down — the write below is idempotent) does, per provider:

1. a cheap probe — ``GET /models`` with one of Relay's pooled keys — whose
   result feeds the circuit breaker like a request would: a 2xx closes an open
   circuit (the provider is back), a provider fault counts as a failure (so a
   provider with no traffic still opens);
2. a verdict from the breaker and the 5-minute window (error rate, p95):
   ``down`` when the circuit is open and the probe failed too, ``degraded``
   when the circuit is open or half-open or the error rate is high,
   ``healthy`` otherwise;
3. on a change, ``providers.status`` and a ``provider_health_events`` row,
   written together (``PostgresProviderStore.record_status``);
4. a failure burst (the 5-minute error rate reaching ``degraded_error_rate``
   over at least ``min_samples`` attempts) noted once when it starts, in the
   provider event log (``events``), whatever the status verdict.

Providers without a pooled key are judged on traffic alone (BYOK-only
providers are not probed with a tenant's key: that would spend their quota).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from relay_server.crypto.envelope import DecryptionError, open_sealed
from relay_server.crypto.keyring import Keyring
from relay_server.domain.provider import Credential
from relay_server.errors import RelayError
from relay_server.observability.provider_events import ProviderEventLog
from relay_server.pipeline.routing.failover import outcome_of
from relay_server.pipeline.routing.health import HealthTracker
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.storage.postgres.credentials import RoutableCredential
from relay_server.storage.postgres.providers import ProviderRow
from relay_server.storage.redis.health import WindowStats

log = logging.getLogger(__name__)

LEASE_NAME = "provider-health-monitor"


@dataclass(frozen=True, slots=True)
class Verdict:
    provider_id: str
    health: str  # healthy | degraded | down
    error_rate: float | None
    p95_ms: int | None
    message: str | None
    changed: bool


class StatusStore(Protocol):
    async def record_status(
        self, provider_id: str, health: str, *, error_rate: float | None, p95_ms: int | None, message: str | None
    ) -> bool: ...


class HealthMonitor:
    def __init__(
        self,
        directory: ProviderDirectory,
        health: HealthTracker,
        statuses: StatusStore,
        pooled: Callable[[], Awaitable[list[RoutableCredential]]],
        keyring: Keyring | None,
        *,
        interval_s: float = 15.0,
        probe_timeout_s: float = 10.0,
        degraded_error_rate: float = 0.5,
        min_samples: int = 5,
        owner: str | None = None,
        events: ProviderEventLog | None = None,
    ) -> None:
        self._events = events
        self._bursting: set[str] = set()  # providers whose current failure burst was already noted
        self._directory = directory
        self._health = health
        self._statuses = statuses
        self._pooled = pooled
        self._keyring = keyring
        self._interval_s = interval_s
        self._probe_timeout_s = probe_timeout_s
        self._degraded_error_rate = degraded_error_rate
        self._min_samples = min_samples
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    async def tick(self) -> list[Verdict]:
        """One round, if this worker leads this interval (the periodic entry point)."""
        if not await self._health.try_lead(LEASE_NAME, self._owner, int(self._interval_s * 3000)):
            return []
        return await self.run_once()

    async def run_once(self) -> list[Verdict]:
        keys: dict[str, RoutableCredential] = {}
        for cred in await self._pooled():
            keys.setdefault(cred.provider_id, cred)  # ordered by priority: the first is the preferred key
        verdicts = []
        for provider in self._directory.routable_providers():
            try:
                verdicts.append(await self._check(provider, keys.get(provider.id)))
            except Exception:  # noqa: BLE001 (one provider's trouble must not stop the round)
                log.warning("health check failed", extra={"provider_id": provider.id}, exc_info=True)
        return verdicts

    async def _probe(self, provider: ProviderRow, cred: RoutableCredential | None) -> tuple[bool | None, str | None]:
        """(ok, message): ok None when there was nothing to probe with."""
        list_models = getattr(self._directory.provider(provider.id), "list_models", None)
        if cred is None or self._keyring is None or list_models is None:
            return None, None
        try:
            secret = open_sealed(self._keyring, cred.sealed, cred.ref)
        except DecryptionError:
            return None, "the probe credential does not decrypt"
        started = time.monotonic()
        try:
            await list_models(Credential(cred.id, secret, cred.base_url or ""), self._probe_timeout_s)
        except RelayError as err:
            latency = int((time.monotonic() - started) * 1000)
            outcome = outcome_of(err)
            if outcome == "failure":
                await self._health.record(provider.id, "failure", latency)
                return False, f"probe failed: {err.message}"
            # The provider answered (a refused key, a client error): reachable.
            await self._health.record(provider.id, "neutral", latency)
            return True, f"probe answered {getattr(err, 'upstream_status', None) or err.http_status}"
        await self._health.record(provider.id, "success", int((time.monotonic() - started) * 1000))
        return True, None

    def _note_burst(self, provider_id: str, stats: WindowStats) -> None:
        rate = stats.error_rate
        if rate is None or stats.attempts < self._min_samples or rate < self._degraded_error_rate:
            self._bursting.discard(provider_id)
            return
        if provider_id in self._bursting:
            return
        self._bursting.add(provider_id)
        if self._events is not None:
            self._events.note(
                provider_id, "failure_burst",
                f"{stats.errors} of {stats.attempts} attempts failed over 5 minutes ({rate:.0%})",
                error_rate=rate, p95_ms=stats.p95_ms,
            )  # fmt: skip

    async def _check(self, provider: ProviderRow, cred: RoutableCredential | None) -> Verdict:
        ok, message = await self._probe(provider, cred)
        circuit = (await self._health.availability([provider.id]))[provider.id]
        stats = await self._health.window(provider.id)
        rate = stats.error_rate
        self._note_burst(provider.id, stats)
        if circuit != "closed":
            health = "down" if ok is False else "degraded"
            message = message or f"circuit {circuit.replace('_', '-')}"
        elif rate is not None and stats.attempts >= self._min_samples and rate >= self._degraded_error_rate:
            health = "degraded"
            message = message or f"error rate {rate:.0%} over 5 minutes"
        else:
            health = "healthy"
        changed = await self._statuses.record_status(provider.id, health, error_rate=rate, p95_ms=stats.p95_ms, message=message)
        if changed:
            log.warning("provider status changed", extra={"provider_id": provider.id, "status": health, "reason": message})
        return Verdict(provider.id, health, rate, stats.p95_ms, message, changed)
