"""Step 3: inbound rate limits — which limits apply to a request, and how a
refusal or a success is told to the client.

Limits come from the tenant's plan (``quota_definitions``), replaced per
resource by an unexpired tenant override (``quota_overrides``), plus per-key
limits (``api_keys.rate_limit_overrides``, e.g. ``{"rpm": 10, "tpm": 20000}``)
that are counted separately and can only make a key stricter than its tenant.
``-1`` means unlimited.  Resources: ``rpm`` and ``tpm`` (sliding minute),
``requests_per_day`` (UTC calendar day).

Counting happens in Redis (``storage/redis/limits.py``); this module only
resolves policies — from memory (``PolicyCache``, refreshed ahead and served
stale when Postgres is unreachable, so no request waits on Postgres for its
limits), dropped on every worker by the invalidation bus when a plan, a
tenant or a key changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from relay_server.cache.policy_cache import PolicyCache
from relay_server.domain.policy import RESOURCES, KeyPolicy, QuotaRow
from relay_server.domain.request import Principal
from relay_server.errors import ErrorKind, RelayError

log = logging.getLogger(__name__)

_UNITS = {"rpm": "requests per minute", "tpm": "tokens per minute", "requests_per_day": "requests per day"}


class QuotaStore(Protocol):
    async def plan_quotas(self) -> Mapping[str, Sequence[QuotaRow]]: ...

    async def tenant_overrides(self, tenant_id: str) -> Sequence[QuotaRow]: ...

    async def key_policy(self, key_id: str) -> KeyPolicy | None: ...


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # tenant | key
    resource: str  # rpm | tpm | requests_per_day
    value: int

    @property
    def window(self) -> str:
        return RESOURCES[self.resource]


def effective_limits(
    plan_rows: Sequence[QuotaRow], overrides: Sequence[QuotaRow], key: KeyPolicy | None, now: datetime
) -> list[Limit]:
    """The limits one request is counted against (unlimited ones left out)."""
    tenant: dict[str, int] = {r.resource: r.limit for r in plan_rows if r.resource in RESOURCES}
    for row in overrides:
        if row.resource in RESOURCES and (row.expires_at is None or row.expires_at > now):
            tenant[row.resource] = row.limit
    limits = [Limit("tenant", res, value) for res, value in sorted(tenant.items()) if value >= 0]
    if key is not None:
        limits += [Limit("key", res, value) for res, value in sorted(key.rate_limits.items()) if value >= 0]
    return limits


class LimitResolver:
    """Principal → the limits that apply now, from cached policies."""

    def __init__(self, store: QuotaStore, *, ttl_s: float = 5.0) -> None:
        self._store = store
        self._plans: PolicyCache[str, Mapping[str, Sequence[QuotaRow]]] = PolicyCache(
            "plan_quotas", ttl_s=max(ttl_s, 30.0), tags=lambda _k, _v: [("plan", "")], refresh_ahead=True
        )
        self._overrides: PolicyCache[str, Sequence[QuotaRow]] = PolicyCache(
            "quota_overrides", ttl_s=ttl_s, tags=lambda tenant_id, _v: [("tenant", tenant_id)], refresh_ahead=True
        )
        self._keys: PolicyCache[str, KeyPolicy | None] = PolicyCache(
            "key_policies", ttl_s=ttl_s, tags=lambda key_id, _v: [("key", key_id)], refresh_ahead=True
        )

    def caches(self) -> list[PolicyCache[str, Any]]:
        """What the invalidation bus must reach."""
        return [self._plans, self._overrides, self._keys]

    async def key_policy(self, key_id: str) -> KeyPolicy | None:
        return await self._keys.get(key_id, lambda: self._store.key_policy(key_id))

    async def limits(self, principal: Principal, now: datetime | None = None) -> list[Limit]:
        plans = await self._plans.get("plans", self._store.plan_quotas)
        overrides = await self._overrides.get(principal.tenant_id, lambda: self._store.tenant_overrides(principal.tenant_id))
        key = await self.key_policy(principal.key_id)
        return effective_limits(plans.get(principal.tenant_plan, ()), overrides, key, now or datetime.now(UTC))


# --- what the client is told -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowState:
    """One limit after admission: its (possibly tightened) value, what is left, when it frees up."""

    limit: Limit
    effective: int
    remaining: int
    reset_in_ms: int


def format_reset(ms: int) -> str:
    """OpenAI's duration style: ``"950ms"``, ``"12s"``, ``"1m30s"``, ``"6h0m0s"``."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    seconds = -(-ms // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(states: Sequence[WindowState]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` from the binding per-minute windows."""
    headers: dict[str, str] = {}
    for resource, suffix in (("rpm", "requests"), ("tpm", "tokens")):
        candidates = [s for s in states if s.limit.resource == resource]
        if not candidates:
            continue
        binding = min(candidates, key=lambda s: (s.remaining, s.effective))
        headers[f"x-ratelimit-limit-{suffix}"] = str(binding.effective)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, binding.remaining))
        headers[f"x-ratelimit-reset-{suffix}"] = format_reset(binding.reset_in_ms)
    return headers


def limit_exceeded(
    limit: Limit,
    effective: int,
    used: int,
    retry_in_ms: int,
    too_large: bool,
    *,
    plan: str,
    upgrade_url: str,
    requested: int,
    now: datetime | None = None,
) -> RelayError:
    """The 429 for a refused request, with Retry-After, the spec's ``details`` and rate-limit headers."""
    now = now or datetime.now(UTC)
    retry_s = max(1, -(-int(retry_in_ms) // 1000))
    reset_at = (now + timedelta(milliseconds=max(0, retry_in_ms))).replace(microsecond=0)
    unit = _UNITS[limit.resource]
    subject = "this API key" if limit.scope == "key" else f"the {plan} plan"
    if too_large:
        message = (
            f"Request too large: it needs about {requested} {unit.split(' per ')[0]} but {subject} allows "
            f"{effective} {unit}. Reduce the size of the request."
        )
    else:
        message = f"You have exceeded {effective} {unit} on {subject}. Try again in {retry_s}s."
    details = {
        "limit": effective,
        "window": limit.window,
        "reset_at": reset_at.isoformat().replace("+00:00", "Z"),
        "upgrade_url": upgrade_url,
        "resource": limit.resource,
        "scope": limit.scope,
    }
    remaining_after = max(0, effective - used)
    headers: dict[str, str] = {}
    if limit.resource in ("rpm", "tpm"):
        suffix = "requests" if limit.resource == "rpm" else "tokens"
        headers = {
            f"x-ratelimit-limit-{suffix}": str(effective),
            f"x-ratelimit-remaining-{suffix}": str(remaining_after),
            f"x-ratelimit-reset-{suffix}": format_reset(retry_in_ms),
        }
    return RelayError(
        ErrorKind.RATE_LIMIT_EXCEEDED,
        message,
        details=details,
        retry_after_s=retry_s,
        headers=headers,
    )
