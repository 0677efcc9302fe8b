"""Every ``tenant_config`` key Relay knows, and what each accepts.

The one definition used by writes (``UpdateTenantConfig`` validates and
normalises through it) and by the config reader.  Keys read by other steps
of the request path are listed here too, so a tenant can set them through
the admin API and cannot store a value those steps would have to ignore.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from relay_server.address_policy import RefusedDestination, classify, parse_literal
from relay_server.domain.guardrails import PolicyError, parse_policy
from relay_server.errors import ErrorKind, RelayError

MAX_CACHE_TTL_S = 30 * 86400
MAX_RETENTION_DAYS = 3650
MAX_MARKUP = Decimal("9.9999")  # requests.markup_rate is NUMERIC(5,4)
MAX_SPEND_USD = Decimal(1_000_000_000)
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_REGION = re.compile(r"^[a-z0-9-]{1,32}$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

ModelExists = Callable[[str], bool]


class _Invalid(ValueError):
    """The reason a value is refused (becomes the 400's message)."""


def _seconds(value: str, _: ModelExists | None) -> str:
    if not value.isdigit() or int(value) > MAX_CACHE_TTL_S:
        raise _Invalid(f"an integer number of seconds from 0 to {MAX_CACHE_TTL_S}.")
    return str(int(value))


def _days(value: str, _: ModelExists | None) -> str:
    if not value.isdigit() or not 1 <= int(value) <= MAX_RETENTION_DAYS:
        raise _Invalid(f"an integer number of days from 1 to {MAX_RETENTION_DAYS}.")
    return str(int(value))


def _decimal(value: str, *, low: Decimal, high: Decimal, places: int, example: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _Invalid(f"a decimal such as {example}.") from None
    if not number.is_finite() or not low <= number <= high:
        raise _Invalid(f"a decimal from {low} to {high}.")
    if number.as_tuple().exponent < -places:  # type: ignore[operator]
        raise _Invalid(f"a decimal with at most {places} decimal places.")
    return number


def _markup(value: str, _: ModelExists | None) -> str:
    return str(_decimal(value, low=Decimal(0), high=MAX_MARKUP, places=4, example="0.15"))


def _usd(value: str, _: ModelExists | None) -> str:
    return str(_decimal(value, low=Decimal(0), high=MAX_SPEND_USD, places=6, example="250.00"))


def _window(value: str, _: ModelExists | None) -> str:
    if value.lower() not in ("daily", "monthly", "total"):
        raise _Invalid("daily, monthly or total.")
    return value.lower()


def _boolean(value: str, _: ModelExists | None) -> str:
    lowered = value.lower()
    if lowered not in _TRUE | _FALSE:
        raise _Invalid("true or false.")
    return "true" if lowered in _TRUE else "false"


def _threshold(value: str, _: ModelExists | None) -> str:
    try:
        number = float(value)
    except ValueError:
        raise _Invalid("a number above 0 and at most 1.") from None
    if not 0 < number <= 1:
        raise _Invalid("a number above 0 and at most 1.")
    return str(number)


def _model(value: str, model_exists: ModelExists | None) -> str:
    if not value or (model_exists is not None and not model_exists(value)):
        raise _Invalid(f"a model in the catalog (`{value}` is not).")
    return value


def _models(value: str, model_exists: ModelExists | None) -> str:
    try:
        models = json.loads(value)
    except ValueError:
        models = None
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise _Invalid('a JSON array of model names, e.g. ["gpt-4o-mini"].')
    unique = list(dict.fromkeys(m.strip() for m in models))
    unknown = [m for m in unique if model_exists is not None and not model_exists(m)]
    if unknown:
        raise _Invalid(f"unknown model(s) {', '.join(unknown)}.")
    return json.dumps(unique)


def _regions(value: str, _: ModelExists | None) -> str:
    """Data residency: the provider regions the tenant's requests may reach (docs/routing.md)."""
    try:
        regions = json.loads(value)
    except ValueError:
        regions = None
    if not isinstance(regions, list) or not regions or not all(isinstance(r, str) and _REGION.match(r) for r in regions):
        raise _Invalid('a non-empty JSON array of region names (lower-case letters, digits, -), e.g. ["eu-west"].')
    return json.dumps(list(dict.fromkeys(regions)))


def _url(value: str, _: ModelExists | None) -> str:
    parts = urlsplit(value)
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    if not secure or not parts.hostname or len(value) > 2048:
        raise _Invalid("an https:// URL (http:// only for localhost).")
    # IP literals that can never receive a webhook (metadata services, ...) are refused now,
    # not at the first delivery.  Names are judged only when delivered: DNS can change.
    try:
        address = parse_literal(parts.hostname)
    except RefusedDestination:
        raise _Invalid(f"a URL whose host is a name or a canonical IP address (not {parts.hostname}).") from None
    verdict = classify(address) if address is not None else None
    if verdict is not None and verdict.always:
        raise _Invalid(f"a URL Relay may deliver to ({parts.hostname} is {verdict.noun}, never a webhook destination).")
    return value


def _guardrails(value: str, _: ModelExists | None) -> str:
    def check_url(url: str) -> None:
        try:
            _url(url, None)
        except _Invalid as why:
            raise PolicyError(f"`classifier.url` must be {why}") from None

    try:
        parse_policy(value, check_url=check_url)
    except PolicyError as why:
        raise _Invalid(str(why)) from None
    return json.dumps(json.loads(value), separators=(",", ":"), sort_keys=True) if value else "{}"


VALIDATORS: dict[str, Callable[[str, ModelExists | None], str]] = {
    "default_cache_ttl_sec": _seconds,
    "markup_rate": _markup,
    "allowed_models": _models,
    "allowed_regions": _regions,
    "webhook_url": _url,
    "spend_cap_usd": _usd,
    "spend_cap_window": _window,
    "cache_nondeterministic": _boolean,
    "semantic_cache_threshold": _threshold,
    "semantic_cache_model": _model,
    "thread_embeddings": _boolean,
    "response_retention_days": _days,
    "guardrails": _guardrails,
}
CONFIG_KEYS = tuple(VALIDATORS)


def validate_entry(key: str, value: str, model_exists: ModelExists | None = None) -> str:
    """The normalised value to store for ``key``; a ``RelayError`` (400) otherwise."""
    validator = VALIDATORS.get(key)
    if validator is None:
        raise RelayError(
            ErrorKind.BAD_REQUEST, f"Unknown config key `{key}`; known keys: {', '.join(CONFIG_KEYS)}.", param="config"
        )
    try:
        return validator(value.strip(), model_exists)
    except _Invalid as why:
        raise RelayError(ErrorKind.BAD_REQUEST, f"Invalid value for config `{key}`: {why}", param=f"config.{key}") from None
