"""The console's key form → ApiKey limits, cap and expiry, and their one-line summary."""

from __future__ import annotations

import pytest

from relay_proto.relay.admin.v1 import api_keys_pb2
from relay_server.dashboard.key_forms import describe_limits, form_values, key_limits


def test_filled_form_sets_limits_cap_and_expiry() -> None:
    key = api_keys_pb2.ApiKey(name="k")
    key_limits(key, {"rpm": "60", "tpm": "", "requests_per_day": "1000", "cap_usd": "25.50", "cap_window": "daily",
                     "expires": "2027-01-31"})
    assert (key.rate_limits.rpm, key.rate_limits.tpm, key.rate_limits.requests_per_day) == (60, 0, 1000)
    assert key.spend_cap.amount_usd == "25.50" and key.spend_cap.window == api_keys_pb2.SPEND_CAP_WINDOW_DAILY
    assert describe_limits(key) == "60 rpm · 1000/day · $25.50 daily · expires 2027-01-31"


def test_empty_form_sets_nothing() -> None:
    key = api_keys_pb2.ApiKey(name="k")
    key_limits(key, {"rpm": "", "cap_usd": "", "expires": ""})
    assert not key.HasField("rate_limits") and not key.HasField("spend_cap") and not key.HasField("expire_time")
    assert describe_limits(key) == ""


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"rpm": "-1"}, "Requests per minute"),
        ({"tpm": "1e6"}, "Tokens per minute"),
        ({"requests_per_day": "0"}, "Requests per day"),
        ({"cap_usd": "ten"}, "spend cap"),
        ({"cap_usd": "5", "cap_window": "weekly"}, "window"),
        ({"expires": "next week"}, "expiry"),
    ],
)
def test_malformed_fields_are_named(form: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        key_limits(api_keys_pb2.ApiKey(name="k"), form)


def test_form_values_round_trip() -> None:
    """What the edit form shows, posted back unchanged, sets the same limits."""
    key = api_keys_pb2.ApiKey(name="k", allowed_models=["gpt-4o-mini", "claude-haiku"])
    key_limits(key, {"rpm": "60", "cap_usd": "5", "cap_window": "total", "expires": "2030-06-01"})
    values = form_values(key)
    assert values["allowed_models"] == "gpt-4o-mini, claude-haiku" and values["cap_window"] == "total"
    again = api_keys_pb2.ApiKey(name="k", allowed_models=key.allowed_models)
    key_limits(again, values)
    assert again == key
