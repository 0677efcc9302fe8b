"""API keys: what the key store knows about one key, and how a key is minted and hashed.

Only the sha256 of a key is ever stored; the secret exists once, in ``MintedKey``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


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
    tenant_allowed_models: tuple[str, ...] = ()  # tenant_config ``allowed_models``
    tenant_allowed_regions: tuple[str, ...] = ()  # tenant_config ``allowed_regions`` (data residency)
    plan_allowed_models: tuple[str, ...] = ()  # plan_models rows of the tenant's plan
    parent_key_id: str | None = None
    rate_limit_overrides: Mapping[str, int] = field(default_factory=dict)
    spend_cap_micros: int | None = None
    spend_cap_window: str | None = None  # daily | monthly | total
    # While its data plane moves to a silo, a tenant's requests are refused (503, Retry-After) until then.
    writes_paused_until: datetime | None = None


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


@dataclass(frozen=True, slots=True)
class NewKey:
    """Everything a new row needs besides the secret's hash, prefix and hint."""

    name: str
    environment: str
    scope: str = "inference"
    parent_key_id: str | None = None
    end_user_id: str | None = None
    allowed_models: tuple[str, ...] = ()
    rate_limit_overrides: Mapping[str, int] = field(default_factory=dict)
    spend_cap_micros: int | None = None
    spend_cap_window: str | None = None
    expires_at: datetime | None = None
    created_by: str | None = None
    created_by_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    tenant_id: str
    name: str
    key_prefix: str
    key_hash: str
    key_hint: str
    environment: str
    scope: str
    parent_key_id: str | None
    end_user_id: str | None
    allowed_models: tuple[str, ...]
    rate_limit_overrides: dict[str, int]
    spend_cap_micros: int | None
    spend_cap_window: str | None
    status: str
    revoked_at: datetime | None
    grace_expires_at: datetime | None
    rotated_to_id: str | None
    last_used_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    created_by: str | None
    created_by_key_id: str | None

    @property
    def is_child(self) -> bool:
        return self.parent_key_id is not None

    def as_new_key(self) -> NewKey:
        """This key's settings, for its successor after a rotation."""
        return NewKey(
            name=self.name,
            environment=self.environment,
            scope=self.scope,
            parent_key_id=self.parent_key_id,
            end_user_id=self.end_user_id,
            allowed_models=self.allowed_models,
            rate_limit_overrides=self.rate_limit_overrides,
            spend_cap_micros=self.spend_cap_micros,
            spend_cap_window=self.spend_cap_window,
            expires_at=self.expires_at,
            created_by=self.created_by,
            created_by_key_id=self.created_by_key_id,
        )
