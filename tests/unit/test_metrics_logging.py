"""Structured logs: every line written while serving a request carries its context; secrets never appear."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from relay_server.domain.request import Principal, RequestContext
from relay_server.observability.log_lines import JsonFormatter
from relay_server.observability.redaction import scrub
from relay_server.observability.request_context import attach, bind_request, log_fields

pytestmark = pytest.mark.asyncio

KEY = "rly_live_sk_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"
ADMIN = "admin-Zq9xW3vU7tS1rP5oN2mL8kJ4"


def line(logger: logging.Logger, message: str, **extra: object) -> dict[str, object]:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None, extra=extra)
    return orjson.loads(JsonFormatter().format(record))


def request_context() -> RequestContext:
    ctx = RequestContext(request_id="req_abc", kind="chat", body={}, metadata={"authorization": f"Bearer {KEY}"})  # type: ignore[arg-type]
    ctx.principal = Principal("ten_42", "key_7", "O5p6", "live", "inference")
    ctx.model = "gpt-4o-mini"
    ctx.provider_id = "openai"
    return ctx


async def test_lines_inside_a_request_carry_its_fields() -> None:
    log = logging.getLogger("relay.test")
    assert "request_id" not in line(log, "outside")
    with bind_request("req_abc", "chat"):
        before = line(log, "before the pipeline knows the tenant")
        attach(request_context())
        inside = line(log, "inside")
        explicit = line(log, "explicit wins", provider="anthropic")

        async def in_a_task() -> dict[str, object]:  # tasks started by the request copy the context
            return line(log, "from a task")

        from_task = await asyncio.ensure_future(in_a_task())
    after = line(log, "after")
    assert before["request_id"] == "req_abc" and "tenant_id" not in before
    for entry in (inside, from_task):
        assert (entry["request_id"], entry["tenant_id"], entry["key_hint"], entry["model"], entry["provider"]) == (
            "req_abc", "ten_42", "O5p6", "gpt-4o-mini", "openai",
        )  # fmt: skip
    assert explicit["provider"] == "anthropic"
    assert "request_id" not in after and log_fields() == {}


async def test_requests_in_concurrent_tasks_do_not_mix() -> None:
    log = logging.getLogger("relay.test")

    async def serve(request_id: str) -> list[object]:
        with bind_request(request_id, "chat"):
            seen = []
            for _ in range(3):
                await asyncio.sleep(0)
                seen.append(line(log, "step")["request_id"])
            return seen

    a, b = await asyncio.gather(serve("req_a"), serve("req_b"))
    assert a == ["req_a"] * 3 and b == ["req_b"] * 3


async def test_secrets_are_masked_wherever_they_slip_in() -> None:
    log = logging.getLogger("relay.test")
    with bind_request("req_abc", "chat"):
        attach(request_context())
        entry = line(
            log, f"calling with {KEY}",
            authorization=f"Bearer {KEY}", admin_token=ADMIN, api_key=KEY, detail=f"header was 'Bearer {ADMIN}'",
        )  # fmt: skip
    text = orjson.dumps(entry).decode()
    assert KEY not in text and ADMIN not in text
    assert entry["authorization"] == entry["admin_token"] == entry["api_key"] == "[redacted]"
    assert entry["msg"] == "calling with rly_live_sk_[redacted]"
    assert entry["detail"] == "header was 'Bearer [redacted]'"
    assert entry["key_hint"] == "O5p6"  # the hint is what identifies a key in logs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("no secrets here", "no secrets here"),
        ("key rly_test_sk_abcdefghijKLMNOP_-12 end", "key rly_test_sk_[redacted] end"),
        ("rly_live_sk_short", "rly_live_sk_short"),  # not a key: too short to be one
        ('{"h":"bearer abc.def.ghi"}', '{"h":"bearer [redacted]"}'),
        ("the bearer of news", "the bearer of news"),
        ("redis at redis+sentinel://relay:s3cr/t@h1:26379,h2/relay down",
         "redis at redis+sentinel://relay:[redacted]@h1:26379,h2/relay down"),
        ("dsn 'postgresql://u:pw@db:5432/x'", "dsn 'postgresql://u:[redacted]@db:5432/x'"),
        ("see https://docs.example/a@b and mail x@y", "see https://docs.example/a@b and mail x@y"),
    ],
)
async def test_scrub(raw: str, expected: str) -> None:
    assert scrub(raw) == expected
