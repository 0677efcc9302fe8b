"""Which usage a report covers: a date range of one environment, optionally one key, model or end user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: date
    end: date  # inclusive
    environment: str = "live"
    api_key_id: str | None = None
    model_id: str | None = None
    end_user_id: str | None = None
