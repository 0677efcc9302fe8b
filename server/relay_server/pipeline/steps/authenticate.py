"""Step 1: who is calling.  API key → Principal, or a 401/402/503.

sha256(key) → in-process policy cache (seconds) → shared cache (Redis,
minutes) → key store (Postgres).  Every change to a key or its tenant purges
both caches at once on every worker (``relay_server.tenancy.policy_bus``), so
a revoked key fails on the next request instead of when a cache expires; the
short in-process TTL only bounds the damage if that purge message is lost.
The shared cache is optional and its failures are the cache's problem: with
Redis down, lookups go to Postgres.

The raw key never leaves this module: logs and errors carry its hint only.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from relay_server.cache.policy_cache import PolicyCache, Tag
from relay_server.domain.keys import KeyRecord, hash_key
from relay_server.domain.request import Principal
from relay_server.errors import ErrorKind, RelayError

KEY_PATTERN = re.compile(r"^rly_(live|test)_sk_[A-Za-z0-9_-]{32,64}$")

_BILLING_MESSAGE = (
    "Your Relay account is {status}: API access is paused until billing is resolved. "
    "Update your payment method in the billing settings to restore access."
)


class KeyStore(Protocol):
    async def find_by_hash(self, key_hash: str) -> KeyRecord | None: ...


class SharedKeyCache(Protocol):
    """A cache shared by every worker.  Implementations swallow (and log) their
    own failures: ``get`` then answers a miss and ``put`` does nothing.

    ``get`` returns the record (None on a miss) and an opaque stamp of what it
    saw, which ``put`` needs to refuse a fill that a concurrent purge made stale.
    """

    async def get(self, key_hash: str) -> tuple[KeyRecord | None, object]: ...

    async def put(self, record: KeyRecord, seen: object) -> None: ...


def bearer_token(metadata: Mapping[str, str]) -> str:
    """The key from ``Authorization: Bearer ...``, or from ``x-api-key`` (how Anthropic's SDKs send it;
    accepted on every door)."""
    header = metadata.get("authorization", "")
    if not header and metadata.get("x-api-key", "").strip():
        return metadata["x-api-key"].strip()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RelayError(
            ErrorKind.INVALID_API_KEY,
            "You didn't provide an API key. Provide it in the Authorization header as 'Bearer rly_live_sk_...'.",
        )
    return token.strip()


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        *,
        cache_ttl_s: float = 5.0,
        shared: SharedKeyCache | None = None,
        on_use: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self._store = store
        self._shared = shared
        self._on_use = on_use
        # Entries are tagged with their key (by hash: unknown keys are cached
        # too, and by id) and their tenant (its status, plan and config).
        self.cache: PolicyCache[str, KeyRecord | None] = PolicyCache(
            "api_keys", ttl_s=cache_ttl_s, tags=_record_tags, max_stale_s=0.0, clock=clock, max_entries=max_entries
        )

    def purge(self, key_hash: str | None = None) -> None:
        """Forget one key (by hash) or all."""
        if key_hash is None:
            self.cache.clear()
        else:
            self.cache.invalidate("key", key_hash)

    def purge_tenant(self, tenant_id: str) -> None:
        """Forget every cached key of one tenant (its status or plan changed)."""
        self.cache.invalidate("tenant", tenant_id)

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        token = bearer_token(metadata)
        if not KEY_PATTERN.match(token):
            raise RelayError(ErrorKind.INVALID_API_KEY, f"Incorrect API key provided: {_redact(token)}.")
        key_hash = hash_key(token)
        record = await self._lookup(key_hash)
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            raise RelayError(ErrorKind.INVALID_API_KEY, f"Incorrect API key provided: {_redact(token)}.")
        _check_usable(record, token)
        if self._on_use is not None:
            self._on_use(record.key_id)
        return Principal(
            tenant_id=record.tenant_id,
            key_id=record.key_id,
            key_hint=record.key_hint,
            environment=record.environment,
            scope=record.scope,
            tenant_plan=record.tenant_plan,
            end_user_id=record.end_user_id,
            allowed_models=record.allowed_models,
            tenant_allowed_models=record.tenant_allowed_models,
            plan_allowed_models=record.plan_allowed_models,
            allowed_regions=record.tenant_allowed_regions,
        )

    async def _lookup(self, key_hash: str) -> KeyRecord | None:
        return await self.cache.get(key_hash, lambda: self._load(key_hash))

    async def _load(self, key_hash: str) -> KeyRecord | None:
        record, seen = await self._shared.get(key_hash) if self._shared is not None else (None, None)
        if record is None:
            record = await self._store.find_by_hash(key_hash)
            # Unknown keys are not shared: a flood of random keys stays local.
            if record is not None and self._shared is not None:
                await self._shared.put(record, seen)
        return record


def _record_tags(key_hash: str, record: KeyRecord | None) -> list[Tag]:
    if record is None:
        return [("key", key_hash)]
    # ``config``: a record may carry what the tenant's configuration decides (its model list).
    return [("key", key_hash), ("key", record.key_id), ("tenant", record.tenant_id), ("config", record.tenant_id)]


def _check_usable(record: KeyRecord, token: str) -> None:
    now = datetime.now(UTC)
    if record.status != "active":
        in_grace = record.grace_expires_at is not None and record.grace_expires_at > now
        if not in_grace:
            raise RelayError(ErrorKind.INVALID_API_KEY, f"The API key {_redact(token)} has been {record.status}.")
    if record.expires_at is not None and record.expires_at <= now:
        raise RelayError(ErrorKind.INVALID_API_KEY, f"The API key {_redact(token)} has expired.")
    status = record.tenant_status
    if status == "deleted":
        raise RelayError(ErrorKind.INVALID_API_KEY, f"Incorrect API key provided: {_redact(token)}.")
    if status == "provisioning":
        raise RelayError(
            ErrorKind.TENANT_PROVISIONING,
            "Your Relay account is still being set up. Try again in a few seconds.",
            retry_after_s=5,
        )
    if status in ("suspended", "expired"):
        raise RelayError(ErrorKind.TENANT_SUSPENDED, _BILLING_MESSAGE.format(status=status))
    if record.writes_paused_until is not None and record.writes_paused_until > now:
        # The write pause of a move to a silo (docs/tenancy.md): seconds long; clients retry.
        raise RelayError(
            ErrorKind.TENANT_PROVISIONING,
            "Your Relay account's data is being moved. Try again in a few seconds.",
            code="tenant_moving",
            retry_after_s=1,
        )


def _redact(token: str) -> str:
    """OpenAI-style: a prefix and the last four characters, never the secret."""
    if len(token) <= 12:
        return "*" * len(token)
    prefix = token[:12] if token.startswith("rly_") else token[:3]
    return f"{prefix}{'*' * 8}{token[-4:]}"
