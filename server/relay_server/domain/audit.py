"""One audit-log event: who did what to which resource."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: str
    tenant_id: str | None
    actor_id: str
    actor_type: str
    action: str
    resource_type: str | None
    resource_id: str | None
    metadata: dict[str, Any]
    ip_address: str | None
    request_id: str | None
    created_at: datetime
