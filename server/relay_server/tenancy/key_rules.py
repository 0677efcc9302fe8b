"""What an API key's settings may be: validation shared by create and update.

Every failure is a 400 naming the field, so a client can fix its request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation

from relay_server.errors import ErrorKind, RelayError

ENVIRONMENTS = ("live", "test")
SCOPES = ("inference", "management")
SPEND_WINDOWS = ("daily", "monthly", "total")
RATE_LIMIT_KEYS = ("rpm", "tpm", "requests_per_day")
MAX_SPEND_USD = Decimal(1_000_000_000)
_END_USER = re.compile(r"^[A-Za-z0-9._:@+-]{1,128}$")
_MICROS = Decimal(1_000_000)


def _bad(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 100:
        raise _bad("api_key.name", "A key needs a name of 1 to 100 characters.")
    return value


def end_user_id(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not _END_USER.match(value):
        raise _bad("api_key.end_user_id", "end_user_id must be 1-128 characters of letters, digits and . _ : @ + -.")
    return value


def allowed_models(models: Iterable[str], model_exists: Callable[[str], bool]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(m.strip() for m in models))
    if any(not m for m in unique):
        raise _bad("api_key.allowed_models", "allowed_models must not contain empty names.")
    unknown = [m for m in unique if not model_exists(m)]
    if unknown:
        raise _bad("api_key.allowed_models", f"Unknown model(s) in allowed_models: {', '.join(unknown)}.")
    return unique


def rate_limits(limits: Mapping[str, int]) -> dict[str, int]:
    """Per-key limits; 0 means "inherit the tenant's", so it is not stored."""
    out: dict[str, int] = {}
    for key, value in limits.items():
        if key not in RATE_LIMIT_KEYS:
            raise _bad("api_key.rate_limits", f"Unknown rate limit `{key}`.")
        if value < 0:
            raise _bad(f"api_key.rate_limits.{key}", "Rate limits must not be negative.")
        if value:
            out[key] = int(value)
    return out


def spend_cap(amount_usd: str, window: str | None) -> tuple[int | None, str | None]:
    """("25.00", "monthly") → (25_000_000 micro-USD, "monthly"); ("", None) → no cap."""
    amount_usd = amount_usd.strip()
    if not amount_usd:
        if window:
            raise _bad("api_key.spend_cap.amount_usd", "A spend cap window needs an amount.")
        return None, None
    try:
        amount = Decimal(amount_usd)
    except InvalidOperation:
        raise _bad("api_key.spend_cap.amount_usd", "amount_usd must be a decimal string such as \"25.00\".") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_SPEND_USD:
        raise _bad("api_key.spend_cap.amount_usd", "amount_usd must be from 0 to 1000000000.")
    if amount.as_tuple().exponent < -6:  # type: ignore[operator]
        raise _bad("api_key.spend_cap.amount_usd", "amount_usd has at most 6 decimal places.")
    if window not in SPEND_WINDOWS:
        raise _bad("api_key.spend_cap.window", "A spend cap needs a window: daily, monthly or total.")
    return int(amount * _MICROS), window


def micros_to_usd(micros: int) -> str:
    return str((Decimal(micros) / _MICROS).quantize(Decimal("0.01") if micros % 10_000 == 0 else Decimal("0.000001")))


def expiry(value: datetime | None, now: datetime) -> datetime | None:
    if value is not None and value <= now:
        raise _bad("api_key.expire_time", "expire_time must be in the future.")
    return value


def grace_seconds(requested: int, default: int) -> int:
    if requested < 0 or requested > 30 * 86400:
        raise _bad("grace_period_seconds", "grace_period_seconds must be from 0 (server default) to 2592000 (30 days).")
    return requested or default
