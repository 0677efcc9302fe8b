"""A provider credential as the admin API shows it (no secret material)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CredentialRow:
    """A credential as the admin API shows it (no secret material)."""

    id: str
    tenant_id: str | None
    provider_id: str
    name: str
    key_hint: str
    base_url: str | None
    status: str
    rpm_limit: int | None
    tpm_limit: int | None
    priority: int
    last_rotated_at: datetime | None
    created_at: datetime

    @property
    def relay_owned(self) -> bool:
        return self.tenant_id is None
