"""Every stream is billed: with provider usage, when the client goes away
mid-stream, when the provider never reports usage, and when a provider
over-reports.  Compared with the provider's own count (test mode)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.domain.provider import ProviderCall
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.pipeline.steps.spend import cap_window
from relay_server.providers.testmode import TestModeProvider
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.spend import RedisSpend, cap_keys
from relay_server.text import tokens
from tests.support.metering import MESSAGES, Harness, Key, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}]


class _Reshaped:
    """The test-mode provider with its usage reports dropped or changed (a provider stub)."""

    name = "test"

    def __init__(self, usage: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        self._inner = TestModeProvider()
        self._usage = usage

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        body = await self._inner.complete(call)
        usage = self._usage(body.pop("usage"))
        return body if usage is None else {**body, "usage": usage}

    async def embed(self, call: ProviderCall) -> dict[str, Any]:
        return await self._inner.embed(call)

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self._inner.stream(call):
            if not chunk.get("choices") and chunk.get("usage") is not None:
                usage = self._usage(chunk["usage"])
                if usage is None:
                    continue
                chunk = {**chunk, "usage": usage}
            yield chunk


async def _truth(body: dict[str, Any]) -> dict[str, Any]:
    """What the test-mode provider itself counts for this request."""
    answer = await TestModeProvider().complete(ProviderCall("chat", body, "gpt-4o-mini", "req_truth"))
    return answer["usage"]


@pytest_asyncio.fixture
async def make_harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path):  # noqa: ANN201
    made: list[Harness] = []

    async def make(provider: Any = None) -> Harness:
        settings = settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path / str(len(made)))
        made.append(await build_harness(database, redis_client, settings, provider=provider))
        return made[-1]

    yield make
    for h in made:
        await h.close()


async def _stream(harness: Harness, key: Key, body: dict[str, Any]) -> list[dict[str, Any]]:
    admitted = await harness.admit(key, body)
    return [chunk async for chunk in harness.pipeline.stream(admitted)]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


async def test_a_stream_is_billed_what_the_provider_reports(make_harness, pg_db: TestDatabase) -> None:  # noqa: ANN001
    harness = await make_harness()
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 60}
    chunks = await _stream(harness, key, body)  # the client did not ask for usage
    assert all("usage" not in c for c in chunks)
    truth = await _truth(body)
    [row] = await harness.rows(tenant)
    assert (row["input_tokens"], row["output_tokens"]) == (truth["prompt_tokens"], truth["completion_tokens"])
    assert row["status"] == "success" and row["stream"] and row["request_metadata"]["usage_source"] == "provider"
    assert row["ttft_ms"] is not None and row["first_token_at"] >= row["started_at"]
    assert row["cost_micros"] > 0 and row["environment"] == "test"


async def test_a_cancelled_stream_is_billed_input_and_the_output_relayed(make_harness, redis_client: Redis, pg_db: TestDatabase) -> None:  # noqa: ANN001,E501
    harness = await make_harness()
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=50_000, cap_window="daily")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 200}
    admitted = await harness.admit(key, body)
    chunks = harness.pipeline.stream(admitted)
    received: list[dict[str, Any]] = []
    enough = asyncio.Event()

    async def client() -> None:  # what the gRPC servicer does with a stream
        try:
            async for chunk in chunks:
                received.append(chunk)
                if len(received) == 6:
                    enough.set()
                    await asyncio.sleep(30)  # the client is slow; it goes away here
        finally:
            await chunks.aclose()

    task = asyncio.create_task(client())
    await enough.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    truth = await _truth(body)
    [row] = await harness.rows(tenant)
    assert row["status"] == "cancelled" and row["http_status"] == 499
    assert row["request_metadata"]["usage_source"] == "estimate"
    assert row["input_tokens"] == truth["prompt_tokens"]
    relayed = tokens.count_text(_text(received), "gpt-4o-mini")
    assert 0 < row["output_tokens"] == relayed < truth["completion_tokens"]
    assert row["cost_micros"] > 0
    # The reservation was replaced by the real (partial) cost.
    window = cap_window("daily", row["created_at"])
    state = await RedisSpend(redis_client).read(cap_keys(tenant, "key", key.key_id, window.window_id)[0])
    assert state == (row["cost_micros"], 0)


@pytest.mark.parametrize("use_tools", [False, True])
async def test_a_provider_without_usage_is_billed_from_the_local_count(make_harness, pg_db: TestDatabase, use_tools: bool) -> None:  # noqa: ANN001,E501
    harness = await make_harness(_Reshaped(lambda usage: None))
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 80}
    if use_tools:
        body |= {"tools": TOOLS, "tool_choice": "required"}
    chunks = await _stream(harness, key, {**body, "stream_options": {"include_usage": True}})
    assert not any(c.get("usage") for c in chunks)  # nothing to relay: the provider sent none
    truth = await _truth(body)
    [row] = await harness.rows(tenant)
    assert row["request_metadata"]["usage_source"] == "estimate"
    assert (row["input_tokens"], row["output_tokens"]) == (truth["prompt_tokens"], truth["completion_tokens"])
    assert row["cost_micros"] > 0


async def test_a_non_streamed_answer_without_usage_is_billed_from_the_local_count(make_harness, pg_db: TestDatabase) -> None:  # noqa: ANN001,E501
    harness = await make_harness(_Reshaped(lambda usage: None))
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    reply = await harness.chat(key, max_tokens=50)
    assert isinstance(reply, dict) and "usage" not in reply
    truth = await _truth({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50})
    [row] = await harness.rows(tenant)
    assert (row["input_tokens"], row["output_tokens"]) == (truth["prompt_tokens"], truth["completion_tokens"])


async def test_a_gross_over_report_is_billed_at_the_lower_local_count(make_harness, pg_db: TestDatabase) -> None:  # noqa: ANN001
    inflate = lambda u: {**u, "prompt_tokens": u["prompt_tokens"] * 100, "completion_tokens": u["completion_tokens"] * 100}  # noqa: E731
    harness = await make_harness(_Reshaped(inflate))
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 50}
    reply = await harness.chat(key, **{k: v for k, v in body.items() if k != "model"})
    assert isinstance(reply, dict)
    truth = await _truth(body)
    [row] = await harness.rows(tenant)
    assert row["request_metadata"]["usage_source"] == "provider_capped"
    assert row["input_tokens"] == truth["prompt_tokens"]
    assert row["output_tokens"] == truth["completion_tokens"]


async def test_a_mid_stream_failure_bills_what_was_generated_and_an_early_failure_bills_nothing(
    make_harness, pg_db: TestDatabase  # noqa: ANN001
) -> None:
    harness = await make_harness()
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 80}
    for after in ("4", "0"):
        metadata = {**key.metadata, "x-relay-test-error": "provider_error", "x-relay-test-error-after": after}
        admitted = await harness.pipeline.admit("chat", body, metadata, new_request_id())
        with pytest.raises(RelayError):
            async for _ in harness.pipeline.stream(admitted):
                pass
    late, early = await harness.rows(tenant)
    assert late["status"] == early["status"] == "error" and late["http_status"] == 502
    assert late["output_tokens"] > 0 and late["cost_micros"] > 0
    assert early["output_tokens"] is None and early["cost_micros"] is None
