"""Rate-limit policies (plan, overrides, key limits), the client-facing
headers and 429s, and the policy cache.  No services."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from relay_server.cache.policy_cache import PolicyCache
from relay_server.domain.policy import KeyPolicy, QuotaRow, parse_key_overrides
from relay_server.errors import ErrorKind
from relay_server.pipeline.steps.limits import (
    Limit,
    WindowState,
    effective_limits,
    format_reset,
    limit_exceeded,
    rate_limit_headers,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PLAN = [QuotaRow("rpm", "per_minute", 60), QuotaRow("tpm", "per_minute", 40000), QuotaRow("requests_per_day", "per_day", 500)]


def test_plan_limits_apply_and_unexpired_overrides_replace_them() -> None:
    overrides = [
        QuotaRow("rpm", "per_minute", 600, NOW + timedelta(days=1)),
        QuotaRow("tpm", "per_minute", 5, NOW - timedelta(seconds=1)),  # expired: ignored
        QuotaRow("requests_per_day", "per_day", -1),  # unlimited: no window at all
    ]
    assert effective_limits(PLAN, overrides, None, NOW) == [Limit("tenant", "rpm", 600), Limit("tenant", "tpm", 40000)]


def test_key_limits_are_counted_in_addition_to_the_tenant_limits() -> None:
    key = KeyPolicy(rate_limits={"rpm": 5, "tpm": -1})
    limits = effective_limits(PLAN, [], key, NOW)
    assert Limit("key", "rpm", 5) in limits and Limit("tenant", "rpm", 60) in limits
    assert not any(lim.scope == "key" and lim.resource == "tpm" for lim in limits)


def test_unknown_resources_in_quota_rows_are_ignored() -> None:
    assert effective_limits([QuotaRow("seats", "per_day", 3)], [], None, NOW) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"rpm": 10, "tpm": 20000}, {"rpm": 10, "tpm": 20000}),
        ({"RPD": 7}, {"requests_per_day": 7}),
        ({"rpm": "10", "tpm": True, "x": 1, "requests_per_day": -2}, {}),
        ({"rpm": 2.9}, {"rpm": 2}),
        (None, {}),
        ([["rpm", 1]], {}),
        ("rpm=1", {}),
    ],
)
def test_key_overrides_parse_strictly(raw: object, expected: dict[str, int]) -> None:
    assert parse_key_overrides(raw) == expected


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0ms"), (-5, "0ms"), (950, "950ms"), (1000, "1s"), (1001, "2s"), (59_000, "59s"),
                     (90_000, "1m30s"), (6 * 3600 * 1000, "6h0m0s")],
)  # fmt: skip
def test_reset_durations_read_like_openais(ms: int, text: str) -> None:
    assert format_reset(ms) == text


def test_headers_report_the_binding_window_of_each_kind() -> None:
    states = [
        WindowState(Limit("tenant", "rpm", 60), 60, 40, 30_000),
        WindowState(Limit("key", "rpm", 5), 5, 2, 12_000),
        WindowState(Limit("tenant", "tpm", 1000), 500, -20, 1_500),  # tightened; remaining never shown negative
        WindowState(Limit("tenant", "requests_per_day", 9), 9, 1, 3_600_000),
    ]
    assert rate_limit_headers(states) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "12s",
        "x-ratelimit-limit-tokens": "500",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "2s",
    }
    assert rate_limit_headers([]) == {}


def test_a_refusal_is_a_429_with_retry_after_details_and_headers() -> None:
    err = limit_exceeded(
        Limit("tenant", "rpm", 100), 100, 100, 2_300, False, plan="free", upgrade_url="https://relay.test/billing",
        requested=1, now=NOW,
    )  # fmt: skip
    assert err.kind is ErrorKind.RATE_LIMIT_EXCEEDED and err.http_status == 429 and err.code == "rate_limit_exceeded"
    assert err.retry_after_s == 3
    assert err.message == "You have exceeded 100 requests per minute on the free plan. Try again in 3s."
    assert err.body()["error"]["details"] == {
        "limit": 100, "window": "per_minute", "reset_at": "2026-01-15T12:00:02Z",
        "upgrade_url": "https://relay.test/billing", "resource": "rpm", "scope": "tenant",
    }  # fmt: skip
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "3s"


def test_a_request_that_can_never_fit_says_so() -> None:
    err = limit_exceeded(Limit("key", "tpm", 50), 50, 0, 60_000, True, plan="pro", upgrade_url="", requested=80, now=NOW)
    assert err.message.startswith("Request too large: it needs about 80 tokens")
    assert "this API key" in err.message


def test_daily_refusals_have_no_per_minute_headers() -> None:
    err = limit_exceeded(Limit("tenant", "requests_per_day", 500), 500, 500, 3_600_000, False, plan="free",
                         upgrade_url="", requested=1, now=NOW)  # fmt: skip
    assert err.headers == {} and err.details["window"] == "per_day" and err.retry_after_s == 3600


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _background() -> None:
    for _ in range(5):  # let the reload task run to completion
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_cache_loads_once_for_concurrent_first_requests() -> None:
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 7

    cache: PolicyCache[str, int] = PolicyCache("t", ttl_s=5.0, tags=lambda k, v: [], refresh_ahead=True)
    assert await asyncio.gather(*(cache.get("k", load) for _ in range(20))) == [7] * 20
    assert calls == 1


@pytest.mark.asyncio
async def test_cache_serves_the_old_value_while_reloading_and_after_a_failed_reload() -> None:
    clock = _Clock()
    cache: PolicyCache[str, int] = PolicyCache("t", ttl_s=5.0, tags=lambda k, v: [], refresh_ahead=True, clock=clock)
    values = iter([1, 2])

    async def good() -> int:
        return next(values)

    async def bad() -> int:
        raise ConnectionError("postgres is down")

    assert await cache.get("k", good) == 1
    clock.now = 10.0  # expired
    assert await cache.get("k", bad) == 1  # stale value at once; the reload fails in the background
    await _background()
    assert await cache.get("k", good) == 1  # the failed reload kept the old value for another ttl
    clock.now = 20.0
    assert await cache.get("k", good) == 1
    await _background()
    assert await cache.get("k", good) == 2


@pytest.mark.asyncio
async def test_cache_first_load_failure_propagates_and_is_retried() -> None:
    cache: PolicyCache[str, int] = PolicyCache("t", ttl_s=5.0, tags=lambda k, v: [], refresh_ahead=True)

    async def bad() -> int:
        raise ConnectionError("down")

    async def good() -> int:
        return 3

    with pytest.raises(ConnectionError):
        await cache.get("k", bad)
    assert await cache.get("k", good) == 3
