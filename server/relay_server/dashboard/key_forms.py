"""The API-key form's limits, cap and expiry → the ``ApiKey`` message, and back to words.

Only the shape is checked here (whole numbers, a decimal amount, a date), so the
page can point at the field; what the values may be (a cap above the tenant's,
a model that does not exist) is the server's call, and its message is shown.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from relay_proto.relay.admin.v1 import api_keys_pb2

_AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,6})?$")
_WINDOWS = {"daily": api_keys_pb2.SPEND_CAP_WINDOW_DAILY, "monthly": api_keys_pb2.SPEND_CAP_WINDOW_MONTHLY,
            "total": api_keys_pb2.SPEND_CAP_WINDOW_TOTAL}
# What the edit form replaces as a whole (its empty fields clear).
EDITABLE = ("rate_limits", "spend_cap", "expire_time", "allowed_models")
_LIMITS = (("rpm", "Requests per minute"), ("tpm", "Tokens per minute"), ("requests_per_day", "Requests per day"))


def _whole(form: Any, name: str, label: str) -> int:
    raw = str(form.get(name, "")).strip()
    if not raw:
        return 0
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise ValueError(f"{label} must be a whole number above 0.")
    return int(raw)


def key_limits(key: api_keys_pb2.ApiKey, form: Any) -> None:
    """Fill rate limits, spend cap and expiry from the form (empty fields set nothing); ValueError says which is wrong."""
    for name, label in _LIMITS:
        if value := _whole(form, name, label):
            setattr(key.rate_limits, name, value)
    amount = str(form.get("cap_usd", "")).strip()
    if amount:
        if not _AMOUNT.match(amount):
            raise ValueError("The spend cap must be an amount in USD, like 25 or 25.50.")
        window = _WINDOWS.get(str(form.get("cap_window", "monthly")))
        if window is None:
            raise ValueError("Choose a spend cap window.")
        key.spend_cap.amount_usd = amount
        key.spend_cap.window = window
    expires = str(form.get("expires", "")).strip()
    if expires:
        try:
            day = date.fromisoformat(expires)
        except ValueError:
            raise ValueError("The expiry must be a date (YYYY-MM-DD).") from None
        key.expire_time.FromDatetime(datetime(day.year, day.month, day.day, tzinfo=UTC))


def describe_limits(key: api_keys_pb2.ApiKey) -> str:
    """e.g. "60 rpm · $25.00 monthly · expires 2027-01-01"; empty when the key has none of its own."""
    parts = []
    limits = key.rate_limits
    if limits.rpm:
        parts.append(f"{limits.rpm} rpm")
    if limits.tpm:
        parts.append(f"{limits.tpm} tpm")
    if limits.requests_per_day:
        parts.append(f"{limits.requests_per_day}/day")
    if key.spend_cap.amount_usd:
        window = api_keys_pb2.SpendCapWindow.Name(key.spend_cap.window).removeprefix("SPEND_CAP_WINDOW_").lower()
        parts.append(f"${key.spend_cap.amount_usd} {window}")
    if key.expire_time.seconds:
        parts.append(f"expires {key.expire_time.ToDatetime(tzinfo=UTC):%Y-%m-%d}")
    if key.allowed_models:
        parts.append("models: " + ", ".join(key.allowed_models))
    return " · ".join(parts)


def form_values(key: api_keys_pb2.ApiKey) -> dict[str, str]:
    """A key's current limits as the edit form's field values."""
    limits = key.rate_limits
    return {
        "rpm": str(limits.rpm or ""), "tpm": str(limits.tpm or ""),
        "requests_per_day": str(limits.requests_per_day or ""),
        "cap_usd": key.spend_cap.amount_usd,
        "cap_window": api_keys_pb2.SpendCapWindow.Name(key.spend_cap.window).removeprefix("SPEND_CAP_WINDOW_").lower()
        if key.spend_cap.window else "monthly",
        "expires": f"{key.expire_time.ToDatetime(tzinfo=UTC):%Y-%m-%d}" if key.expire_time.seconds else "",
        "allowed_models": ", ".join(key.allowed_models),
    }
