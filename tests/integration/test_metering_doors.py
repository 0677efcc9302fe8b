"""Billing is door-independent: the same question asked through the OpenAI door and the Responses
door is billed the provider's count, logged with its door, and the Responses answer reports the
usage that was billed (real Postgres and Redis, the test-mode provider's own count as truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.api.responses_frames import ResponsesSSE
from relay_server.dialects.responses.request import parse_turn, to_chat
from relay_server.domain.provider import ProviderCall
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.providers.testmode import TestModeProvider
from relay_server.storage.postgres.pool import Database
from tests.support.metering import (
    MESSAGES,
    Harness,
    build_harness,
    make_key,
    make_tenant,
    settings_for,
)
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

DOORS = ("openai", "responses")


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path):
    made = await build_harness(database, redis_client, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path))
    yield made
    await made.close()


def _request(door: str, stream: bool) -> tuple[dict[str, Any], Any]:
    """(the chat form the pipeline sees, the Responses turn or None)."""
    if door == "responses":
        turn = parse_turn({"model": "gpt-4o-mini", "input": MESSAGES, "max_output_tokens": 60, "stream": stream})
        return to_chat(turn), turn
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 60}
    return ({**body, "stream": True} if stream else body), None


async def _truth(chat: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in chat.items() if k not in ("stream", "stream_options")}
    return (await TestModeProvider().complete(ProviderCall("chat", body, "gpt-4o-mini", "req_truth")))["usage"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("door", DOORS)
async def test_each_door_is_billed_the_provider_count_and_logged_with_its_door(
    harness: Harness, pg_db: TestDatabase, door: str, stream: bool
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    chat, turn = _request(door, stream)
    admitted = await harness.pipeline.admit("chat", chat, key.metadata, new_request_id(), door=door)
    frames = ResponsesSSE(turn, "resp_test", model="gpt-4o-mini") if turn is not None else None
    if stream:
        items = [item async for item in harness.pipeline.stream(admitted)]
        if frames is not None:
            for item in items:
                frames.item(item)
            frames.end()
    else:
        answer = await harness.pipeline.complete(admitted)
        if frames is not None:
            frames.body(answer)
    truth = await _truth(chat)
    [row] = await harness.rows(tenant)
    assert row["door"] == door and row["status"] == "success" and row["stream"] is stream
    assert (row["input_tokens"], row["output_tokens"]) == (truth["prompt_tokens"], truth["completion_tokens"])
    assert row["cost_micros"] > 0
    if frames is not None:
        usage = frames.final["usage"]
        assert (usage["input_tokens"], usage["output_tokens"]) == (row["input_tokens"], row["output_tokens"])


@pytest.mark.parametrize("door", DOORS)
async def test_a_cap_smaller_than_the_reservation_refuses_through_each_door(
    harness: Harness, pg_db: TestDatabase, door: str
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=1, cap_window="daily")
    chat, _ = _request(door, False)
    with pytest.raises(RelayError) as refused:
        await harness.pipeline.admit("chat", chat, key.metadata, new_request_id(), door=door)
    assert refused.value.code == "spend_cap_exceeded"
    [row] = await harness.rows(tenant)
    assert row["door"] == door and row["error_code"] == "spend_cap_exceeded" and row["cost_micros"] in (0, None)
