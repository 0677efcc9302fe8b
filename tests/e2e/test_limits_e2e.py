"""Limits, caps and revocation as a client sees them: each door's SDK (openai chat and responses,
anthropic messages) → Envoy → Relay.

429 with Retry-After and the x-ratelimit-* headers (also on successes, as
OpenAI sends them), 402 spend_cap_exceeded that the SDK does not retry, and
the request log over REST."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from tests.support.doors import DOORS, DoorClient
from tests.support.metering import Key, make_key, make_tenant
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e


def _door(door: str, relay: RelayStack, key: Key, max_retries: int = 0) -> DoorClient:
    return DoorClient(door, relay.base_url, key.secret, max_retries)


@pytest.mark.parametrize("door", DOORS)
def test_rate_limit_headers_on_success_and_a_429_with_retry_after(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant, rate_limits={"rpm": 2})
    client = _door(door, relay, key)
    remaining = []
    for _ in range(2):
        text, headers = client.create()
        assert text
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-limit-tokens"] == "2000000"  # the pro plan's TPM
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(headers["x-ratelimit-remaining-requests"])
    assert remaining == ["1", "0"]

    with pytest.raises(client.rate_limit_error) as refused:
        client.create()
    response = refused.value.response  # type: ignore[attr-defined]
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    code, kind = client.error_code(response.json())
    assert kind == "rate_limit_error" and code in ("rate_limit_exceeded", None)
    if door != "anthropic":
        error = response.json()["error"]
        assert set(error["details"]) >= {"limit", "window", "reset_at", "upgrade_url"}
        assert error["details"]["limit"] == 2 and error["details"]["window"] == "per_minute"


@pytest.mark.parametrize("door", DOORS)
def test_a_stream_carries_the_headers_too(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn, plan="free")
    key = make_key(relay.db.owner_dsn, tenant)
    with _door(door, relay, key).stream() as (headers, lines):
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-remaining-requests"] == "59"
        assert lines


@pytest.mark.parametrize("door", DOORS)
def test_an_exhausted_cap_is_a_402_the_sdk_does_not_retry(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant, cap_micros=1, cap_window="daily")
    client = _door(door, relay, key, max_retries=3)
    with pytest.raises(client.status_error) as refused:
        client.create()
    response = refused.value.response  # type: ignore[attr-defined]
    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    code, kind = client.error_code(response.json())
    assert (code, kind) == ((None, "billing_error") if door == "anthropic" else ("spend_cap_exceeded", "insufficient_quota"))
    if door != "anthropic":
        details = response.json()["error"]["details"]
        assert details["cap_usd"] == "0.000001" and details["window"] == "daily"

    # One request reached Relay despite max_retries=3: the request log says so, with the door.
    rows = _wait_for_rows(relay, key, 1)
    assert [(r["status"], r["http_status"], r["error_code"], r["door"]) for r in rows] == [
        ("error", 402, "spend_cap_exceeded", door)]


@pytest.mark.parametrize("door", DOORS)
def test_a_revoked_key_is_refused_at_once(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant)
    client = _door(door, relay, key)
    assert client.create()[0]
    with httpx.Client(base_url=relay.base_url, headers={"authorization": f"Bearer {relay.admin_token}"}, timeout=30) as admin:
        revoked = admin.post(f"/keys/{key.key_id}:revoke", json={"tenant_id": tenant})
        assert revoked.status_code == 200, revoked.text
    with pytest.raises(client.authentication_error) as refused:
        client.create()
    response = refused.value.response  # type: ignore[attr-defined]
    assert response.status_code == 401 and key.secret not in response.text
    assert client.error_code(response.json())[1] == ("authentication_error" if door == "anthropic" else "invalid_request_error")


@pytest.mark.parametrize("door", DOORS)
def test_the_request_log_is_served_over_rest(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant)
    assert _door(door, relay, key).create()[0]
    assert _wait_for_rows(relay, key, 1)[0]["door"] == door
    with httpx.Client(base_url=relay.base_url, headers={"authorization": f"Bearer {key.secret}"}, timeout=30) as http:
        listed = http.get("/requests", params={"page_size": 10})
        assert listed.status_code == 200, listed.text
        [record] = listed.json()["requests"]
        assert record["api_key_id"] == key.key_id and record["status"] == "success"
        assert int(record["total_cost"]["micros"]) > 0 and record["total_cost"]["usd"].startswith("0.0000")
        usage = http.get(f"/keys/{key.key_id}/usage")
        assert usage.status_code == 200 and "total" in usage.json()
        other = make_key(relay.db.owner_dsn, make_tenant(relay.db.owner_dsn))
        denied = http.get(f"/keys/{other.key_id}/usage")
        assert denied.status_code == 404 and denied.json()["error"]["code"] == "not_found"
        bad = http.get("/requests", params={"page_token": "%%%"})
        assert bad.status_code == 400


def _wait_for_rows(relay: RelayStack, key: Key, n: int) -> list[dict]:
    """Rows are written off the hot path in batches: poll briefly for them."""
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(relay.db.owner_dsn) as conn:
            cur = conn.execute(
                "SELECT status, http_status, error_code, door FROM requests WHERE api_key_id = %s ORDER BY created_at",
                (key.key_id,),
            )
            rows = [dict(zip(("status", "http_status", "error_code", "door"), r, strict=True)) for r in cur.fetchall()]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
