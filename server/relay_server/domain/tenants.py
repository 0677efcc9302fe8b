"""Tenants as the admin API and the tenancy services see them: the tenant, its members, its features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: str
    slug: str
    name: str
    plan: str
    status: str
    status_changed_at: datetime
    trial_ends_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    metadata: dict[str, str]



@dataclass(frozen=True, slots=True)
class MemberRow:
    id: str
    tenant_id: str
    email: str
    name: str | None
    role: str
    status: str
    created_at: datetime



@dataclass(frozen=True, slots=True)
class FeatureState:
    feature: str
    enabled: bool
    source: str  # plan | override
    reason: str | None = None
    expires_at: datetime | None = None
