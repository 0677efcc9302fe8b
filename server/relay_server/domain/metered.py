"""A finished request as it is recorded: how it ended, its usage and cost."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.pricing import DEFAULT_MARKUP, Cost
from relay_server.domain.provider import Usage
from relay_server.domain.request import RequestContext


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request ended, for the request log."""

    status: str  # success | error | cached | timeout | cancelled
    http_status: int
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Metered:
    """Everything known about a finished request: what the request log and the log line record."""

    ctx: RequestContext
    entry: CatalogEntry | None
    outcome: Outcome
    usage: Usage | None = None
    cost: Cost | None = None
    markup: Decimal = DEFAULT_MARKUP
    usage_source: str | None = None  # provider | estimate | provider_capped
    credential_id: str | None = None
    completed_at: float = field(default_factory=time.time)


class RequestRecorder(Protocol):
    def record(self, metered: Metered) -> None: ...
