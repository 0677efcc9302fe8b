"""Spend-cap arithmetic: windows, tenant config parsing, reservations that
never undercut the bill, and the 402.  No services."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timezone
from decimal import Decimal

import pytest

from relay_server.api.error_mapping import response_headers
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.pricing import price
from relay_server.domain.provider import Usage
from relay_server.errors import ErrorKind
from relay_server.pipeline.steps.spend import (
    Cap,
    cap_exceeded,
    cap_window,
    caps_for,
    parse_markup,
    parse_tenant_cap,
    reservation_micros,
    usd,
)


def _entry(**kw: object) -> CatalogEntry:
    base: dict[str, object] = dict(
        model_id="gpt-4o-mini", relay_name="gpt-4o-mini", provider_id="openai", provider_api="openai",
        provider_name="gpt-4o-mini", kind="chat", input_cost_per_1m=Decimal("0.15"), output_cost_per_1m=Decimal("0.60"),
        context_window=128000, max_output_tokens=16384, owned_by="openai", created=0,
    )  # fmt: skip
    base.update(kw)
    return CatalogEntry(**base)  # type: ignore[arg-type]


def test_windows_are_utc_days_months_and_forever() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    day = cap_window("daily", moment)
    assert (day.window_id, day.start, day.end) == (
        "d20261231", datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    )
    month = cap_window("monthly", moment)
    assert (month.window_id, month.end) == ("m202612", datetime(2027, 1, 1, tzinfo=UTC))
    assert cap_window("monthly", datetime(2026, 2, 28, tzinfo=UTC)).end == datetime(2026, 3, 1, tzinfo=UTC)
    total = cap_window("total", moment)
    assert (total.window_id, total.start, total.end, total.ttl_ms(moment)) == ("total", None, None, 0)
    assert day.ttl_ms(moment) == 1000 + 86_400_000  # the key outlives its window by a day
    with pytest.raises(ValueError):
        cap_window("weekly", moment)


def test_a_non_utc_moment_lands_in_its_utc_day() -> None:
    from datetime import timedelta

    tokyo = timezone(timedelta(hours=9))
    assert cap_window("daily", datetime(2026, 1, 2, 3, 0, tzinfo=tokyo)).window_id == "d20260101"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"spend_cap_usd": "10", "spend_cap_window": "daily"}, (10_000_000, "daily")),
        ({"spend_cap_usd": "0.0005"}, (500, "monthly")),
        ({"spend_cap_micros": "42", "spend_cap_window": "TOTAL"}, (42, "total")),
        ({"spend_cap_usd": "ten"}, None),
        ({"spend_cap_usd": "-1"}, None),
        ({"spend_cap_usd": "5", "spend_cap_window": "weekly"}, None),
        ({"spend_cap_micros": "1.5"}, None),
        ({}, None),
    ],
)
def test_tenant_caps_parse_from_config(config: dict[str, str], expected: tuple[int, str] | None) -> None:
    assert parse_tenant_cap(config) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, "0.20"), ("0.15", "0.1500"), (" 0 ", "0.0000"), ("-0.1", "0.20"), ("10.5", "0.20"), ("NaN", "0.20"),
     ("abc", "0.20"), ("", "0.20")],
)  # fmt: skip
def test_markup_from_config_falls_back_to_the_default(raw: str | None, expected: str) -> None:
    config = {} if raw is None else {"markup_rate": raw}
    assert parse_markup(config) == Decimal(expected)


def test_key_and_tenant_caps_together() -> None:
    now = datetime(2026, 1, 15, tzinfo=UTC)
    caps = caps_for(key_id="key_1", environment="test", key_cap=(500, "daily"), tenant_cap=(9000, "monthly"), now=now)
    assert [(c.scope, c.subject, c.cap_micros, c.window.name) for c in caps] == [
        ("key", "key_1", 500, "daily"), ("tenant", "test", 9000, "monthly")
    ]
    assert caps_for(key_id="k", environment="live", key_cap=(None, None), tenant_cap=None, now=now) == []
    assert caps_for(key_id="k", environment="live", key_cap=(5, "hourly"), tenant_cap=None, now=now) == []
    assert caps[0].warn_at_micros == 400


@pytest.mark.parametrize("tokens", [(0, 0), (1, 1), (13, 32), (999, 1), (12_345, 16_384), (7, 0)])
@pytest.mark.parametrize("markup", ["0", "0.2", "0.15", "1.3333"])
def test_a_reservation_is_never_less_than_the_bill_for_that_usage(tokens: tuple[int, int], markup: str) -> None:
    entry = _entry(cache_read_cost_per_1m=Decimal("0.075"))
    reserved = reservation_micros(entry, tokens[0], tokens[1], Decimal(markup), input_margin=0.0)
    billed = price(entry, Usage(*tokens), Decimal(markup)).total_micros
    assert reserved >= billed
    slack = math.ceil(Decimal(16) * Decimal("0.15") * (1 + Decimal(markup)))  # the 16 slack input tokens
    assert reserved - billed <= slack + 1


def test_the_input_margin_pads_the_estimate() -> None:
    entry = _entry(input_cost_per_1m=Decimal("1000000"), output_cost_per_1m=Decimal("0"))  # $1 per input token
    assert reservation_micros(entry, 100, 0, Decimal("0"), input_margin=0.10) == (110 + 16) * 1_000_000


def test_exhausted_cap_is_a_terminal_402_with_details() -> None:
    cap = Cap("key", "key_1", 10_000_000, cap_window("daily", datetime(2026, 1, 15, 8, tzinfo=UTC)))
    err = cap_exceeded(cap, 9_990_000, 5_000, 20_000, upgrade_url="https://relay.test/billing")
    assert err.kind is ErrorKind.SPEND_CAP_EXCEEDED and err.http_status == 402 and err.code == "spend_cap_exceeded"
    assert not err.retryable and ("x-should-retry", "false") in response_headers(err, "req_1")
    assert err.message == (
        "This API key has reached its daily spend cap of $10.000000 (spent $9.990000, $0.005000 held by requests in "
        "flight); this request could cost up to $0.020000. The cap resets at 2026-01-16T00:00:00Z."
    )
    assert err.details == {
        "scope": "key", "window": "daily", "cap_usd": "10.000000", "spent_usd": "9.990000", "reserved_usd": "0.005000",
        "request_max_usd": "0.020000", "reset_at": "2026-01-16T00:00:00Z", "upgrade_url": "https://relay.test/billing",
    }  # fmt: skip
    lifetime = Cap("tenant", "live", 1, cap_window("total", datetime(2026, 1, 15, tzinfo=UTC)))
    err = cap_exceeded(lifetime, 1, 0, 5, upgrade_url="")
    assert err.message.startswith("Your account has reached its lifetime spend cap") and err.details["reset_at"] is None


def test_usd_is_exact() -> None:
    assert (usd(0), usd(1), usd(1_234_567), usd(10**12)) == ("0.000000", "0.000001", "1.234567", "1000000.000000")
