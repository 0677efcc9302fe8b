"""A tenant's response-cache and thread settings, as the request path reads them.

From ``tenant_config`` (free-form text values, parsed here with defaults for
anything missing or malformed), the effective plan features (plan defaults
with unexpired overrides) and whether this database has pgvector.  Read in one
``tenant_tx`` and kept in memory per tenant (dropped on every worker when the
tenant's configuration changes), so the cache step costs no Postgres round
trip on most requests; when Postgres cannot be read, the last known value is
served (or caching stays off).

Config keys (all optional):
  default_cache_ttl_sec      integer seconds; absent or 0: caching off unless
                             a request sends ``x-relay-cache-ttl``
  cache_nondeterministic     true: also cache sampled requests and requests
                             with tools
  semantic_cache_threshold   cosine similarity for a semantic hit, 0 < t <= 1
                             (default 0.95)
  semantic_cache_model       embedding model of the semantic cache and thread
                             search (default text-embedding-3-small)
  thread_embeddings          false: do not embed assistant messages for search
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from relay_server.cache.policy_cache import PolicyCache
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.response_cache import semantic_available
from relay_server.storage.postgres.tenant_config import snapshot

log = logging.getLogger(__name__)

MAX_CACHE_TTL_S = 30 * 86400
DEFAULT_SEMANTIC_THRESHOLD = 0.95
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class TenantFlags:
    default_cache_ttl_s: int = 0
    cache_nondeterministic: bool = False
    semantic_cache: bool = False
    """The plan feature (or an override) is on; ``semantic_available`` says whether it can run."""
    semantic_threshold: float = DEFAULT_SEMANTIC_THRESHOLD
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    threads: bool = True
    thread_embeddings: bool = True
    vector_available: bool = False

    @property
    def semantic_available(self) -> bool:
        return self.semantic_cache and self.vector_available


class FlagSource(Protocol):
    async def flags(self, tenant_id: str) -> TenantFlags: ...


def _flag(values: Mapping[str, str], key: str, default: bool) -> bool:
    raw = values.get(key, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw:
        log.warning("ignoring invalid tenant config value", extra={"config_key": key})
    return default


def parse_flags(values: Mapping[str, str], features: frozenset[str], vector_available: bool) -> TenantFlags:
    ttl = 0
    raw_ttl = values.get("default_cache_ttl_sec", "").strip()
    if raw_ttl.isdigit() and int(raw_ttl) <= MAX_CACHE_TTL_S:
        ttl = int(raw_ttl)
    elif raw_ttl:
        log.warning("ignoring invalid tenant config value", extra={"config_key": "default_cache_ttl_sec"})
    threshold = DEFAULT_SEMANTIC_THRESHOLD
    raw_threshold = values.get("semantic_cache_threshold", "").strip()
    if raw_threshold:
        try:
            parsed = float(raw_threshold)
            if not math.isfinite(parsed) or not 0 < parsed <= 1:
                raise ValueError(raw_threshold)
            threshold = parsed
        except ValueError:
            log.warning("ignoring invalid tenant config value", extra={"config_key": "semantic_cache_threshold"})
    return TenantFlags(
        default_cache_ttl_s=ttl,
        cache_nondeterministic=_flag(values, "cache_nondeterministic", False),
        semantic_cache="semantic_cache" in features,
        semantic_threshold=threshold,
        embedding_model=values.get("semantic_cache_model", "").strip() or DEFAULT_EMBEDDING_MODEL,
        threads="threads" in features,
        thread_embeddings=_flag(values, "thread_embeddings", True),
        vector_available=vector_available,
    )


class PostgresTenantFlags:
    """``FlagSource`` over Postgres, kept per tenant in a ``PolicyCache`` that
    the invalidation bus empties when the tenant, its config or a plan changes."""

    def __init__(self, db: Database, *, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self.cache: PolicyCache[str, TenantFlags] = PolicyCache(
            "tenant_flags", ttl_s=ttl_s, tags=lambda t, _v: [("tenant", t), ("config", t), ("plan", "")], clock=clock
        )

    def forget(self, tenant_id: str | None = None) -> None:
        if tenant_id is None:
            self.cache.clear()
        else:
            self.cache.forget(tenant_id)

    async def flags(self, tenant_id: str) -> TenantFlags:
        try:
            return await self.cache.get(tenant_id, lambda: self._load(tenant_id))
        except Exception:  # noqa: BLE001 (never loaded and Postgres failed: caching stays off)
            log.warning("tenant cache settings unavailable", extra={"tenant_id": tenant_id}, exc_info=True)
            return TenantFlags()

    async def _load(self, tenant_id: str) -> TenantFlags:
        async with self._db.tenant_tx(tenant_id) as conn:
            snap = await snapshot(conn, tenant_id, datetime.now(UTC))
            available = await semantic_available(conn)
        if snap is None:
            return TenantFlags(threads=False)
        features = frozenset(f.feature for f in snap.features if f.enabled)
        return parse_flags(snap.values, features, available)
