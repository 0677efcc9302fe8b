"""Step 4: hard spend caps — per key (``api_keys.spend_cap_micros`` +
``spend_cap_window``) and per tenant (tenant_config ``spend_cap_usd`` +
``spend_cap_window``, counted per environment), over a UTC day, a UTC month or
the key's lifetime.

Before dispatch the request's worst-case cost (estimated input with a margin,
plus ``max_tokens`` or the model's maximum output, at the tenant's markup) is
reserved atomically in Redis; after it ends the reservation is replaced by the
real cost.  ``spent + reserved + worst case ≤ cap`` is checked in the same
atomic step that reserves, so no number of concurrent requests can push the
settled spend over the cap (as long as the provider counts no more input than
the margin allows for — test mode counts exactly what Relay estimates).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Protocol

from relay_server.cache.policy_cache import PolicyCache
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.pricing import DEFAULT_MARKUP, price
from relay_server.domain.provider import Usage
from relay_server.errors import ErrorKind, RelayError

log = logging.getLogger(__name__)

WINDOWS = ("daily", "monthly", "total")
WARN_SHARE = Decimal("0.8")
_MICROS = Decimal(1_000_000)
_INPUT_SLACK_TOKENS = 16
_KEY_GRACE = timedelta(days=1)  # window keys outlive their window a little, for late settlements


@dataclass(frozen=True, slots=True)
class CapWindow:
    name: str  # daily | monthly | total
    window_id: str  # d20260115 | m202601 | total
    start: datetime | None
    end: datetime | None

    def ttl_ms(self, now: datetime) -> int:
        if self.end is None:
            return 0
        return max(1, int((self.end + _KEY_GRACE - now).total_seconds() * 1000))


def cap_window(name: str, now: datetime) -> CapWindow:
    # Called for every admitted request; the window only changes with the UTC day, so the
    # datetime arithmetic runs once per (window, day) and the frozen result is shared.
    now = now.astimezone(UTC)
    return _cap_window(name, now.year, now.month, now.day)


@functools.lru_cache(maxsize=64)
def _cap_window(name: str, year: int, month: int, day: int) -> CapWindow:
    now = datetime(year, month, day, tzinfo=UTC)
    if name == "daily":
        start = now
        return CapWindow(name, start.strftime("d%Y%m%d"), start, start + timedelta(days=1))
    if name == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        return CapWindow(name, start.strftime("m%Y%m"), start, end)
    if name == "total":
        return CapWindow(name, "total", None, None)
    raise ValueError(f"unknown spend cap window {name!r}")


@dataclass(frozen=True, slots=True)
class Cap:
    scope: str  # key | tenant
    subject: str  # the key id, or the environment for a tenant cap
    cap_micros: int
    window: CapWindow

    @property
    def warn_at_micros(self) -> int:
        return math.ceil(Decimal(self.cap_micros) * WARN_SHARE)


class TenantCapSource(Protocol):
    async def tenant_spend_cap(self, tenant_id: str) -> tuple[int, str] | None:
        """(cap in micro-USD, window) from the tenant's config, or None."""
        ...


def parse_tenant_cap(config: Mapping[str, str]) -> tuple[int, str] | None:
    """tenant_config ``spend_cap_usd`` (decimal USD) or ``spend_cap_micros``, and ``spend_cap_window``."""
    micros: int | None = None
    try:
        if config.get("spend_cap_micros"):
            micros = int(config["spend_cap_micros"])
        elif config.get("spend_cap_usd"):
            micros = int((Decimal(config["spend_cap_usd"]) * _MICROS).to_integral_value())
    except (ValueError, InvalidOperation):
        return None
    if micros is None or micros < 0:
        return None
    window = (config.get("spend_cap_window") or "monthly").strip().lower()
    return (micros, window) if window in WINDOWS else None


_MAX_MARKUP = Decimal("9.9999")  # requests.markup_rate is NUMERIC(5,4)


def parse_markup(config: Mapping[str, str], default: Decimal = DEFAULT_MARKUP) -> Decimal:
    """tenant_config ``markup_rate`` (e.g. ``0.15``); the default when absent or invalid."""
    raw = config.get("markup_rate")
    if raw is None or not raw.strip():
        return default
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0 or value > _MAX_MARKUP:
        log.warning("invalid markup_rate in tenant config; using the default", extra={"value": raw})
        return default
    return value.quantize(Decimal("0.0001"))


class TenantConfigSource(Protocol):
    async def tenant_config(self, tenant_id: str) -> Mapping[str, str]: ...


class TenantMeteringConfig:
    """The tenant's markup (a ``MarkupSource``) and tenant-wide cap (a ``TenantCapSource``).

    Reads tenant_config through any reader with ``tenant_config(tenant_id)``,
    cached for ``ttl_s``, refreshed in the background and dropped on every
    worker when the tenant's configuration changes (``cache``).
    """

    def __init__(self, source: TenantConfigSource, *, ttl_s: float = 5.0) -> None:
        self._source = source
        self.cache: PolicyCache[str, Mapping[str, str]] = PolicyCache(
            "tenant_metering", ttl_s=ttl_s, tags=lambda t, _v: [("tenant", t), ("config", t)], refresh_ahead=True
        )

    async def _config(self, tenant_id: str) -> Mapping[str, str]:
        return await self.cache.get(tenant_id, lambda: self._source.tenant_config(tenant_id))

    async def values(self, tenant_id: str) -> Mapping[str, str]:
        """Every stored value (guardrails read theirs here: one cache for the request path)."""
        return await self._config(tenant_id)

    async def markup_rate(self, tenant_id: str) -> Decimal:
        return parse_markup(await self._config(tenant_id))

    async def tenant_spend_cap(self, tenant_id: str) -> tuple[int, str] | None:
        return parse_tenant_cap(await self._config(tenant_id))


def caps_for(
    *,
    key_id: str,
    environment: str,
    key_cap: tuple[int | None, str | None],
    tenant_cap: tuple[int, str] | None,
    now: datetime,
) -> list[Cap]:
    caps: list[Cap] = []
    micros, window = key_cap
    if micros is not None and window in WINDOWS:
        caps.append(Cap("key", key_id, micros, cap_window(window, now)))
    if tenant_cap is not None:
        caps.append(Cap("tenant", environment, tenant_cap[0], cap_window(tenant_cap[1], now)))
    return caps


@functools.lru_cache(maxsize=16)
def _margin_factor(input_margin: float) -> Decimal:
    return 1 + Decimal(str(input_margin))  # the float as written (0.1 → 1.1 exactly), once per setting


def reservation_micros(
    entry: CatalogEntry, input_tokens: int, output_tokens: int, markup: Decimal, *, input_margin: float = 0.10
) -> int:
    """Worst-case billed cost in micro-USD, rounded up: never below what the same usage is billed."""
    padded_input = math.ceil(input_tokens * _margin_factor(input_margin)) + _INPUT_SLACK_TOKENS
    cost = price(entry, Usage(padded_input, output_tokens), markup)
    return int((cost.total_cost * _MICROS).to_integral_value(rounding=ROUND_CEILING))


def usd(micros: int) -> str:
    """Exact decimal dollars: 1234567 → "1.234567"."""
    return str((Decimal(micros) / _MICROS).quantize(Decimal("0.000001")))


def cap_exceeded(cap: Cap, spent: int, reserved: int, request_micros: int, *, upgrade_url: str) -> RelayError:
    """The 402 for an exhausted cap: terminal (x-should-retry: false) until the window resets or the cap rises."""
    subject = "This API key" if cap.scope == "key" else "Your account"
    period = {"daily": "daily", "monthly": "monthly", "total": "lifetime"}[cap.window.name]
    in_flight = f", ${usd(reserved)} held by requests in flight" if reserved else ""
    message = (
        f"{subject} has reached its {period} spend cap of ${usd(cap.cap_micros)} "
        f"(spent ${usd(spent)}{in_flight}); this request could cost up to ${usd(request_micros)}."
    )
    if cap.window.end is not None:
        message += f" The cap resets at {_iso(cap.window.end)}."
    details = {
        "scope": cap.scope,
        "window": cap.window.name,
        "cap_usd": usd(cap.cap_micros),
        "spent_usd": usd(spent),
        "reserved_usd": usd(reserved),
        "request_max_usd": usd(request_micros),
        "reset_at": _iso(cap.window.end) if cap.window.end is not None else None,
        "upgrade_url": upgrade_url,
    }
    return RelayError(ErrorKind.SPEND_CAP_EXCEEDED, message, details=details)


def caps_unavailable() -> RelayError:
    """Fail closed: a capped key's spend cannot be checked (Redis or Postgres unreachable)."""
    return RelayError(
        ErrorKind.NO_PROVIDER_AVAILABLE,
        "Spend caps cannot be checked right now, so requests of capped keys are paused. Try again shortly.",
        code="spend_cap_unavailable",
        retry_after_s=1,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
