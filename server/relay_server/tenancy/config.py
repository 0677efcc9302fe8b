"""Per-tenant configuration as the request path sees it.

``await TenantConfigReader.get(tenant_id) -> TenantConfig``: markup rate,
allowed models, default cache TTL, webhook URL and the effective feature
set (plan defaults, then unexpired overrides).  Kept in memory per tenant
(``PolicyCache``: ``config_cache_ttl_s``, 60 s by default, never past the next
override expiry), dropped on every worker by the invalidation bus when the
tenant, its configuration or a plan changes.

Values are parsed with ``config_values.validate_entry`` (the same rules that
validate writes), so a bad stored value falls back to the default (logged)
instead of failing requests.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from relay_server.cache.policy_cache import PolicyCache
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.silos import SYSTEM_KEYS
from relay_server.storage.postgres.tenant_config import snapshot
from relay_server.tenancy.config_values import CONFIG_KEYS, validate_entry

__all__ = ["CONFIG_KEYS", "TenantConfig", "TenantConfigReader", "validate_entry"]

log = logging.getLogger(__name__)

DEFAULT_MARKUP = Decimal("0.20")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    tenant_id: str
    plan: str
    markup_rate: Decimal = DEFAULT_MARKUP
    allowed_models: tuple[str, ...] = ()  # empty: every model
    default_cache_ttl_s: int | None = None  # None: caching off unless a request asks
    webhook_url: str | None = None
    features: frozenset[str] = field(default_factory=frozenset)
    spend_cap_micros: int | None = None  # the tenant-wide cap, when set
    spend_cap_window: str = "monthly"
    values: Mapping[str, str] = field(default_factory=dict)  # every valid entry, normalised

    def has(self, feature: str) -> bool:
        return feature in self.features


def parse_config(tenant_id: str, plan: str, values: Mapping[str, str], features: frozenset[str]) -> TenantConfig:
    parsed: dict[str, str] = {}
    for key, raw in values.items():
        if key in SYSTEM_KEYS:  # the silo move's own entries, never set through the API
            continue
        try:
            parsed[key] = validate_entry(key, raw)
        except RelayError:
            log.warning("ignoring invalid stored config value", extra={"tenant_id": tenant_id, "config_key": key})
    ttl = parsed.get("default_cache_ttl_sec")
    return TenantConfig(
        tenant_id=tenant_id,
        plan=plan,
        markup_rate=Decimal(parsed["markup_rate"]) if "markup_rate" in parsed else DEFAULT_MARKUP,
        allowed_models=tuple(json.loads(parsed["allowed_models"])) if "allowed_models" in parsed else (),
        default_cache_ttl_s=int(ttl) if ttl is not None else None,
        webhook_url=parsed.get("webhook_url"),
        features=features,
        spend_cap_micros=int(Decimal(parsed["spend_cap_usd"]) * 1_000_000) if "spend_cap_usd" in parsed else None,
        spend_cap_window=parsed.get("spend_cap_window", "monthly"),
        values=parsed,
    )


class TenantConfigReader:
    def __init__(
        self,
        db: Database,
        *,
        ttl_s: int = 60,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl_s
        self._now = now
        self.cache: PolicyCache[str, tuple[TenantConfig, int]] = PolicyCache(
            "tenant_config", ttl_s=ttl_s, tags=lambda t, _v: [("tenant", t), ("config", t), ("plan", "")],
            ttl_of=lambda v: v[1], clock=clock,
        )  # fmt: skip

    async def get(self, tenant_id: str) -> TenantConfig:
        """The tenant's configuration; NOT_FOUND for an unknown tenant."""
        config, _ = await self.cache.get(tenant_id, lambda: self._load(tenant_id))
        return config

    async def _load(self, tenant_id: str) -> tuple[TenantConfig, int]:
        now = self._now()
        async with self._db.tenant_tx(tenant_id) as conn:
            snap = await snapshot(conn, tenant_id, now)
        if snap is None:
            raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
        features = frozenset(f.feature for f in snap.features if f.enabled)
        ttl = self._ttl
        expiries = [f.expires_at for f in snap.features if f.expires_at is not None]
        if expiries:  # an override that ends must end on time, not up to a TTL later
            ttl = min(ttl, int((min(expiries) - now).total_seconds()))
        return parse_config(tenant_id, snap.plan, snap.values, features), ttl
