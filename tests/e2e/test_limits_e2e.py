"""Limits and caps as a client sees them: the openai SDK → Envoy → Relay.

429 with Retry-After and the x-ratelimit-* headers (also on successes, as
OpenAI sends them), 402 spend_cap_exceeded that the SDK does not retry, and
the request log over REST."""

from __future__ import annotations

import time

import httpx
import openai
import psycopg
import pytest
from openai import OpenAI

from tests.support.metering import MESSAGES, Key, make_key, make_tenant
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e


DOORS = ("openai", "responses")
"""The public dialects a client may call; limits, caps and the request log are the same through each."""


def _client(relay: RelayStack, key: Key, **kw: object) -> OpenAI:
    return OpenAI(base_url=relay.base_url, api_key=key.secret, timeout=30, **{"max_retries": 0, **kw})  # type: ignore[arg-type]


def _ask(client: OpenAI, door: str, *, raw: bool = False) -> object:
    """One small request through ``door`` (the raw response when ``raw``)."""
    if door == "responses":
        create = client.responses.with_raw_response.create if raw else client.responses.create
        return create(model="gpt-4o-mini", input=MESSAGES, max_output_tokens=5)
    create = client.chat.completions.with_raw_response.create if raw else client.chat.completions.create
    return create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)


def _answered(reply: object, door: str) -> str:
    return reply.output_text if door == "responses" else reply.choices[0].message.content  # type: ignore[attr-defined]


@pytest.mark.parametrize("door", DOORS)
def test_rate_limit_headers_on_success_and_a_429_with_retry_after(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant, rate_limits={"rpm": 2})
    client = _client(relay, key)
    remaining = []
    for _ in range(2):
        raw = _ask(client, door, raw=True)
        assert _answered(raw.parse(), door)  # type: ignore[attr-defined]
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-limit-tokens"] == "2000000"  # the pro plan's TPM
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["1", "0"]

    with pytest.raises(openai.RateLimitError) as refused:
        _ask(client, door)
    response = refused.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert set(error["details"]) >= {"limit", "window", "reset_at", "upgrade_url"}
    assert error["details"]["limit"] == 2 and error["details"]["window"] == "per_minute"


def test_a_stream_carries_the_headers_too(relay: RelayStack) -> None:
    tenant = make_tenant(relay.db.owner_dsn, plan="free")
    key = make_key(relay.db.owner_dsn, tenant)
    with _client(relay, key).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, max_tokens=5
    ) as stream:
        assert stream.headers["x-ratelimit-limit-requests"] == "60"
        assert stream.headers["x-ratelimit-remaining-requests"] == "59"
        assert list(stream.iter_lines())


@pytest.mark.parametrize("door", DOORS)
def test_an_exhausted_cap_is_a_402_the_sdk_does_not_retry(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant, cap_micros=1, cap_window="daily")
    client = _client(relay, key, max_retries=3)
    with pytest.raises(openai.APIStatusError) as refused:
        _ask(client, door)
    response = refused.value.response
    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "spend_cap_exceeded" and error["type"] == "insufficient_quota"
    assert error["details"]["cap_usd"] == "0.000001" and error["details"]["window"] == "daily"

    # One request reached Relay despite max_retries=3: the request log says so.
    rows = _wait_for_rows(relay, key, 1)
    assert [(r["status"], r["http_status"], r["error_code"]) for r in rows] == [("error", 402, "spend_cap_exceeded")]


@pytest.mark.parametrize("door", DOORS)
def test_the_request_log_is_served_over_rest(relay: RelayStack, door: str) -> None:
    tenant = make_tenant(relay.db.owner_dsn)
    key = make_key(relay.db.owner_dsn, tenant)
    _ask(_client(relay, key), door)
    _wait_for_rows(relay, key, 1)
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
                "SELECT status, http_status, error_code FROM requests WHERE api_key_id = %s ORDER BY created_at", (key.key_id,)
            )
            rows = [dict(zip(("status", "http_status", "error_code"), r, strict=True)) for r in cur.fetchall()]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
