"""Rate-limit policy values: plan/override quota rows and what a key adds to its tenant's policy.

``-1`` means unlimited.  Resources: ``rpm`` and ``tpm`` (sliding minute), ``requests_per_day``
(UTC calendar day).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Each resource has one window.
RESOURCES: dict[str, str] = {"rpm": "per_minute", "tpm": "per_minute", "requests_per_day": "per_day"}
# The plans: a fixed set (the CHECK constraints of tenants.plan and the plan tables).
PLANS = ("free", "starter", "pro", "enterprise")
# Short names accepted in api_keys.rate_limit_overrides.
_KEY_OVERRIDE_NAMES = {"rpm": "rpm", "tpm": "tpm", "rpd": "requests_per_day", "requests_per_day": "requests_per_day"}


@dataclass(frozen=True, slots=True)
class QuotaRow:
    resource: str
    window: str
    limit: int
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What a key adds to its tenant's policy: stricter limits and a spend cap."""

    rate_limits: Mapping[str, int]
    spend_cap_micros: int | None = None
    spend_cap_window: str | None = None


def parse_key_overrides(raw: Any) -> dict[str, int]:
    """``api_keys.rate_limit_overrides`` → {resource: limit}; unknown names and bad values are ignored."""
    if not isinstance(raw, Mapping):
        return {}
    parsed: dict[str, int] = {}
    for name, value in raw.items():
        resource = _KEY_OVERRIDE_NAMES.get(str(name).lower())
        if resource is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value < -1:
            continue
        parsed[resource] = int(value)
    return parsed
