"""Steps 3 and 4 together: rate limits and spend caps in one Redis round trip.

``admit`` resolves the policies (from memory), runs ``admit.lua`` once and
either returns a ``Ticket`` (with the ``x-ratelimit-*`` headers) or raises
429 / 402.  ``settle`` runs ``settle.lua`` once when the request has ended.

Redis trouble (timeouts are 250 ms) never hangs a request:
- rate limits fail OPEN: the request goes through, ``stats.limits_failed_open``
  counts it and a warning is logged (at most every few seconds);
- spend caps fail CLOSED for keys or tenants that have a cap (setting
  ``spend_cap_fail_closed``): 503 ``spend_cap_unavailable``; uncapped traffic
  is untouched.
A cap window missing from Redis is seeded from the request log first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from redis.exceptions import RedisError

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.request import RequestContext
from relay_server.pipeline.steps.limits import Limit, LimitResolver, WindowState, limit_exceeded, rate_limit_headers
from relay_server.pipeline.steps.spend import (
    Cap,
    TenantCapSource,
    cap_exceeded,
    caps_for,
    caps_unavailable,
    reservation_micros,
    usd,
)
from relay_server.pipeline.steps.usage_estimate import worst_case_output_tokens
from relay_server.storage.redis.limits import (
    AdmitReply,
    CapArg,
    RedisAdmission,
    SettleCap,
    WindowArg,
    noisy_key,
    window_key,
)
from relay_server.storage.redis.spend import RedisSpend, cap_keys

log = logging.getLogger(__name__)

_SEED_ROUNDS = 3
_SETTLE_TRIES = 3
_WARN_EVERY_S = 5.0


class SpendLedger(Protocol):
    async def spent_micros(
        self, tenant_id: str, *, key_id: str | None, environment: str | None, start: datetime | None, end: datetime | None
    ) -> int: ...


class EventSink(Protocol):
    async def emit(self, tenant_id: str, event_type: str, event_id: str, payload: dict[str, object]) -> None: ...


class TrafficNoter(Protocol):
    def note(self, tenant_id: str) -> None: ...


@dataclass
class GateStats:
    limits_failed_open: int = 0
    caps_failed_closed: int = 0
    caps_unchecked: int = 0  # capped requests let through because fail-closed is off
    settle_failures: int = 0


@dataclass(slots=True)
class HeldCap:
    cap: Cap
    hash_key: str
    zset_key: str
    reserved: int
    spent: int | None = None  # settled spend when admitted (budget-aware routing), None: unknown


@dataclass(slots=True)
class Ticket:
    """What admission decided for one request; settled exactly once."""

    tenant_id: str
    request_id: str
    admit_ms: int
    input_estimate: int
    markup: Decimal
    headers: dict[str, str] = field(default_factory=dict)
    token_windows: list[str] = field(default_factory=list)
    caps: list[HeldCap] = field(default_factory=list)
    settled: bool = False


class AdmissionGate:
    def __init__(
        self,
        *,
        redis: RedisAdmission | None,
        spend: RedisSpend | None,
        limits: LimitResolver,
        tenant_caps: TenantCapSource,
        ledger: SpendLedger,
        events: EventSink | None = None,
        traffic: TrafficNoter | None = None,
        fail_closed: bool = True,
        lease_s: float = 1860.0,
        input_margin: float = 0.10,
        upgrade_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._spend = spend
        self._limits = limits
        self._tenant_caps = tenant_caps
        self._ledger = ledger
        self._events = events
        self._traffic = traffic
        self._fail_closed = fail_closed
        self._lease_ms = int(lease_s * 1000)
        self._margin = input_margin
        self._upgrade_url = upgrade_url
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self._last_warning = 0.0
        self.stats = GateStats()

    async def admit(self, ctx: RequestContext, entry: CatalogEntry, input_tokens: int, markup: Decimal) -> Ticket:
        principal = ctx.principal
        assert principal is not None
        now_ms = int(self._clock() * 1000)
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        ticket = Ticket(principal.tenant_id, ctx.request_id, now_ms, input_tokens, markup)
        if self._traffic is not None:
            self._traffic.note(principal.tenant_id)
        try:
            limits = await self._limits.limits(principal, now)
            key_policy = await self._limits.key_policy(principal.key_id)
            tenant_cap = await self._tenant_caps.tenant_spend_cap(principal.tenant_id)
        except Exception as exc:  # never loaded and Postgres unreachable: nothing is known to enforce
            return self._degraded(ticket, False, exc)
        key_cap = (key_policy.spend_cap_micros, key_policy.spend_cap_window) if key_policy else (None, None)
        caps = caps_for(
            key_id=principal.key_id, environment=principal.environment, key_cap=key_cap, tenant_cap=tenant_cap, now=now
        )
        if not limits and not caps:
            return ticket
        amount = 0
        if caps:
            output = worst_case_output_tokens(ctx.kind, ctx.body, entry, input_tokens)
            amount = reservation_micros(entry, input_tokens, output, markup, input_margin=self._margin)
        windows = [self._window(principal.tenant_id, principal.key_id, lim, input_tokens, now) for lim in limits]
        held = [HeldCap(c, *cap_keys(principal.tenant_id, c.scope, c.subject, c.window.window_id), amount) for c in caps]
        cap_args = [
            CapArg(h.hash_key, h.zset_key, h.cap.cap_micros, amount, now_ms + self._lease_ms, h.cap.window.ttl_ms(now))
            for h in held
        ]
        try:
            reply = await self._run(principal.tenant_id, ctx.request_id, now_ms, windows, cap_args, held)
        except (TimeoutError, RedisError, OSError, _Unavailable) as exc:
            return self._degraded(ticket, bool(caps), exc)
        if reply.status == AdmitReply.LIMITED:
            index, effective, used, retry_ms, too_large = reply.values
            limit = limits[index - 1]
            raise limit_exceeded(
                limit, effective, used, retry_ms, bool(too_large), plan=principal.tenant_plan,
                upgrade_url=self._upgrade_url, requested=windows[index - 1].cost, now=now,
            )  # fmt: skip
        if reply.status == AdmitReply.CAP_EXHAUSTED:
            index, spent, reserved = reply.values
            raise cap_exceeded(held[index - 1].cap, spent, reserved, amount, upgrade_url=self._upgrade_url)
        states = [
            WindowState(lim, *reply.values[3 * i : 3 * i + 3]) for i, lim in enumerate(limits)
        ]
        for j, held_cap in enumerate(held):
            if len(reply.values) > 3 * len(limits) + j:
                held_cap.spent = int(reply.values[3 * len(limits) + j])
        ticket.headers = rate_limit_headers(states)
        ticket.token_windows = [w.key for w, lim in zip(windows, limits, strict=True) if lim.resource == "tpm"]
        ticket.caps = held
        return ticket

    def _window(self, tenant_id: str, key_id: str, limit: Limit, input_tokens: int, now: datetime) -> WindowArg:
        owner = key_id if limit.scope == "key" else None
        cost = input_tokens if limit.resource == "tpm" else 1
        if limit.window == "per_day":
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            reset_ms = int((day + timedelta(days=1) - now).total_seconds() * 1000)
            key = window_key(tenant_id, limit.resource, key_id=owner, day=day)
            return WindowArg(key, "d", limit.value, cost, limit.scope == "tenant", reset_ms)
        key = window_key(tenant_id, limit.resource, key_id=owner)
        return WindowArg(key, "m", limit.value, cost, limit.scope == "tenant")

    async def _run(
        self, tenant_id: str, request_id: str, now_ms: int, windows: list[WindowArg], caps: list[CapArg], held: list[HeldCap]
    ) -> AdmitReply:
        if self._redis is None:
            raise _Unavailable("no Redis configured")
        for _ in range(_SEED_ROUNDS):
            reply = await self._redis.admit(
                noisy=noisy_key(tenant_id), request_id=request_id, now_ms=now_ms, windows=windows, caps=caps
            )
            if reply.status != AdmitReply.NEED_SEED:
                return reply
            for index in reply.values:
                await self._seed(tenant_id, held[index - 1], caps[index - 1].ttl_ms)
        raise _Unavailable("spend cap windows kept vanishing while being seeded")

    async def _seed(self, tenant_id: str, held: HeldCap, ttl_ms: int) -> None:
        """Seed one cap window; concurrent requests of this process share one Postgres read."""
        pending = self._seeding.get(held.hash_key)
        if pending is None:
            pending = asyncio.ensure_future(self._seed_once(tenant_id, held, ttl_ms))
            self._seeding[held.hash_key] = pending
            pending.add_done_callback(lambda _: self._seeding.pop(held.hash_key, None))
        await asyncio.shield(pending)

    async def _seed_once(self, tenant_id: str, held: HeldCap, ttl_ms: int) -> None:
        cap = held.cap
        try:
            spent = await self._ledger.spent_micros(
                tenant_id,
                key_id=cap.subject if cap.scope == "key" else None,
                environment=cap.subject if cap.scope == "tenant" else None,
                start=cap.window.start,
                end=cap.window.end,
            )
        except Exception as exc:  # Postgres down: the spend is unknown
            raise _Unavailable(f"cannot read spend from the request log: {exc!r}") from exc
        assert self._spend is not None
        await self._spend.seed(held.hash_key, spent, ttl_ms)
        log.info("spend cap window seeded", extra={"tenant_id": tenant_id, "cap": held.hash_key, "spent_micros": spent})

    def _degraded(self, ticket: Ticket, capped: bool, exc: BaseException) -> Ticket:
        if capped and self._fail_closed:
            self.stats.caps_failed_closed += 1
            self._warn("spend caps unavailable: refusing a capped request", exc)
            raise caps_unavailable() from None
        self.stats.limits_failed_open += 1
        if capped:
            self.stats.caps_unchecked += 1
        self._warn("rate limits unavailable: failing open", exc)
        return ticket

    def _warn(self, message: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning(message, extra={"error": repr(exc), "stats": vars(self.stats)})

    async def settle(self, ticket: Ticket, *, cost_micros: int, total_tokens: int, tracked: bool = False) -> None:
        """Reconcile TPM and replace reservations by the real cost.  Never raises; runs at most once.

        ``tracked``: the caller already runs in a task of its own that is drained at shutdown and
        that a client's cancellation does not reach (the pipeline's metering task): the settlement
        then runs in it, without a second task.
        """
        if ticket.settled:
            return
        ticket.settled = True
        if self._redis is None or (not ticket.token_windows and not ticket.caps):
            return
        if tracked:
            await self._settle(ticket, cost_micros, total_tokens)
            return
        task = asyncio.get_running_loop().create_task(self._settle(ticket, cost_micros, total_tokens))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Shielded: a second cancellation of a closing stream must not lose the settlement.
        await asyncio.shield(task)

    async def _settle(self, ticket: Ticket, cost_micros: int, total_tokens: int) -> None:
        assert self._redis is not None
        delta = total_tokens - ticket.input_estimate
        caps = [SettleCap(h.hash_key, h.zset_key, cost_micros, h.cap.warn_at_micros) for h in ticket.caps]
        for attempt in range(_SETTLE_TRIES):
            try:
                results = await self._redis.settle(
                    request_id=ticket.request_id,
                    admit_s=ticket.admit_ms // 1000,
                    now_ms=int(self._clock() * 1000),
                    token_windows=[(key, delta) for key in ticket.token_windows],
                    caps=caps,
                )
                break
            except (TimeoutError, RedisError, OSError) as exc:
                if attempt + 1 < _SETTLE_TRIES:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                self.stats.settle_failures += 1
                log.error(
                    "spend settlement lost; the cap windows will be rebuilt from the request log",
                    extra={"request_id": ticket.request_id, "cost_micros": cost_micros, "error": repr(exc)},
                )
                await self._forget(ticket)
                return
        for held, (spent, warned) in zip(ticket.caps, results, strict=True):
            if warned:
                await self._warn_tenant(ticket, held, spent)

    async def _forget(self, ticket: Ticket) -> None:
        """Drop cap windows whose settlement failed, so the next admission reseeds them from Postgres."""
        if self._spend is None:
            return
        try:
            await self._spend.forget([h.hash_key for h in ticket.caps])
        except (TimeoutError, RedisError, OSError):
            pass  # Redis is down: it comes back empty or with the window's keys expiring

    async def _warn_tenant(self, ticket: Ticket, held: HeldCap, spent: int) -> None:
        if self._events is None:
            return
        cap = held.cap
        event_id = f"spend_cap.warning:{cap.scope}:{cap.subject}:{cap.window.window_id}"
        payload: dict[str, object] = {
            "type": "spend_cap.warning",
            "tenant_id": ticket.tenant_id,
            "scope": cap.scope,
            "key_id": cap.subject if cap.scope == "key" else None,
            "environment": cap.subject if cap.scope == "tenant" else None,
            "window": cap.window.name,
            "window_id": cap.window.window_id,
            "cap_micros": cap.cap_micros,
            "spent_micros": spent,
            "cap_usd": usd(cap.cap_micros),
            "spent_usd": usd(spent),
            "threshold": "0.8",
        }
        try:
            await self._events.emit(ticket.tenant_id, "spend_cap.warning", event_id, payload)
        except Exception:
            log.exception("could not record the spend cap warning", extra={"event_id": event_id})

    async def drain(self) -> None:
        """Wait for settlements still running (graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class _Unavailable(Exception):
    """No Redis, or a cap window could not be (re)built: treated like Redis being unreachable."""


