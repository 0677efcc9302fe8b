"""Step 1: who is calling.  API key → Principal, or a 401/402/503.

sha256(key) → in-process TTL cache → key store (Postgres).  The cache is short
(seconds) and purged on revocation, so a revoked key fails on the next request.
The raw key never leaves this module: logs and errors carry its hint only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.context import Principal

KEY_PATTERN = re.compile(r"^rly_(live|test)_sk_[A-Za-z0-9_-]{32,64}$")

_BILLING_MESSAGE = (
    "Your Relay account is {status}: API access is paused until billing is resolved. "
    "Update your payment method in the billing settings to restore access."
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the key store knows about one key and its tenant."""

    key_id: str
    key_hash: str
    key_hint: str
    tenant_id: str
    tenant_status: str
    tenant_plan: str
    environment: str
    scope: str
    status: str
    expires_at: datetime | None = None
    grace_expires_at: datetime | None = None
    end_user_id: str | None = None
    allowed_models: tuple[str, ...] = ()


class KeyStore(Protocol):
    async def find_by_hash(self, key_hash: str) -> KeyRecord | None: ...


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MintedKey:
    secret: str = field(repr=False)
    key_hash: str
    key_prefix: str
    key_hint: str


def mint_key(environment: str) -> MintedKey:
    """A new ``rly_{live|test}_sk_`` key: 256 random bits, URL-safe base64 (43 chars)."""
    if environment not in ("live", "test"):
        raise ValueError(f"unknown key environment {environment!r}")
    secret = f"rly_{environment}_sk_{secrets.token_urlsafe(32)}"
    return MintedKey(secret=secret, key_hash=hash_key(secret), key_prefix=f"rly_{environment}_", key_hint=secret[-4:])


def bearer_token(metadata: Mapping[str, str]) -> str:
    header = metadata.get("authorization", "")
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    def purge(self, key_hash: str | None = None) -> None:
        """Forget one key (or all): called when keys or tenants change."""
        if key_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(key_hash, None)

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        token = bearer_token(metadata)
        if not KEY_PATTERN.match(token):
            raise RelayError(ErrorKind.INVALID_API_KEY, f"Incorrect API key provided: {_redact(token)}.")
        key_hash = hash_key(token)
        record = await self._lookup(key_hash)
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            raise RelayError(ErrorKind.INVALID_API_KEY, f"Incorrect API key provided: {_redact(token)}.")
        _check_usable(record, token)
        return Principal(
            tenant_id=record.tenant_id,
            key_id=record.key_id,
            key_hint=record.key_hint,
            environment=record.environment,
            scope=record.scope,
            tenant_plan=record.tenant_plan,
            end_user_id=record.end_user_id,
            allowed_models=record.allowed_models,
        )

    async def _lookup(self, key_hash: str) -> KeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self._store.find_by_hash(key_hash)
        if len(self._cache) > 100_000:  # bound memory under a flood of random keys
            self._cache.clear()
        self._cache[key_hash] = (now + self._ttl, record)
        return record


def _check_usable(record: KeyRecord, token: str) -> None:
    now = datetime.now(timezone.utc)
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


def _redact(token: str) -> str:
    """OpenAI-style: a prefix and the last four characters, never the secret."""
    if len(token) <= 12:
        return "*" * len(token)
    prefix = token[:12] if token.startswith("rly_") else token[:3]
    return f"{prefix}{'*' * 8}{token[-4:]}"
