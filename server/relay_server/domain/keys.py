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
    parent_key_id: str | None = None
    rate_limit_overrides: Mapping[str, int] = field(default_factory=dict)
    spend_cap_micros: int | None = None
    spend_cap_window: str | None = None  # daily | monthly | total


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
