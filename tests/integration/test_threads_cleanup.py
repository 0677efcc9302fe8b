"""The stream cleanup worker: replies whose writer died are finalized from their buffer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import psycopg
import pytest
import pytest_asyncio

from relay_server.domain.request import Principal
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.threads import MessageRow, NewMessage
from relay_server.storage.redis.stream_buffer import RedisStreamBuffer, create_stream_redis
from relay_server.threads import events
from relay_server.threads.render import message_json
from relay_server.threads.runner import ReplyRunner
from relay_server.threads.service import Threads
from relay_server.workers.stream_cleanup import StreamCleanup
from tests.integration.test_cache_harness import build_harness
from tests.support.pg import TestDatabase

TENANT = "ten_demo"


class World:
    def __init__(self, db: Database, buffer: RedisStreamBuffer, threads: Threads, principal: Principal, owner_dsn: str):
        self.db, self.buffer, self.threads, self.principal, self.owner_dsn = db, buffer, threads, principal, owner_dsn
        self.cleanup = StreamCleanup(db, buffer)

    async def dangling(self, deltas: list[str], *, lease_s: float | None = -1.0) -> MessageRow:
        """A reply left 'streaming' by a writer that buffered ``deltas`` and then died."""
        thread = await self.threads.create_thread(self.principal, end_user_id="eu", title="", metadata=None,
                                                  idempotency_key="")  # fmt: skip
        async with self.db.tenant_tx(TENANT) as conn:
            user, reply = await store.insert_exchange(
                conn, tenant_id=TENANT, thread_id=thread["id"],
                user=NewMessage("msg_u_" + thread["id"][4:], "user", [{"type": "text", "text": "hi"}]),
                assistant=NewMessage("msg_a_" + thread["id"][4:], "assistant", [], status="streaming"),
            )
        await self.buffer.append(TENANT, reply.id, 1, events.created(message_json(reply), message_json(user)))
        for i, text in enumerate(deltas, start=2):
            await self.buffer.append(TENANT, reply.id, i, events.delta(reply.id, {"content": text}))
        if lease_s is not None:
            await self.buffer.renew_lease(TENANT, reply.id, lease_s)
        return reply

    async def stored(self, reply: MessageRow) -> MessageRow:
        async with self.db.tenant_tx(TENANT) as conn:
            found = await store.get_message(conn, reply.thread_id, reply.id)
        assert found is not None
        return found


@pytest_asyncio.fixture
async def world(database: Database, redis_client, pg_db: TestDatabase, redis_server: RedisHandle) -> AsyncIterator[World]:
    harness = await build_harness(database, redis_client, pg_db.owner_dsn)
    client = create_stream_redis(redis_server.url, block_ms=1000)
    buffer = RedisStreamBuffer(client)
    runner = ReplyRunner(database, buffer, harness.pipeline)
    threads = Threads(database, harness.pipeline._auth, harness.pipeline, buffer, runner, harness.flags)
    yield World(database, buffer, threads, await threads.caller(harness.auth()), pg_db.owner_dsn)
    await client.aclose()


@pytest.mark.asyncio
async def test_a_reply_whose_lease_ran_out_is_finalized_and_followers_are_released(world: World) -> None:
    reply = await world.dangling(["Therefore, the optimal ", "strate"])
    follower = asyncio.create_task(_collect(world, reply, after=3))
    await asyncio.sleep(0.05)
    assert not follower.done()  # waiting for a live tail that will never come

    assert await world.cleanup.run_once() == 1
    stored = await world.stored(reply)
    assert stored.status == "failed" and "interrupted" in (stored.error or "")
    assert stored.content == [{"type": "text", "text": "Therefore, the optimal strate"}]

    frames = await asyncio.wait_for(follower, 5)
    last = orjson.loads(frames[0].split(b"data: ", 1)[1])
    assert frames[0].startswith(b"id: 4\n") and last["object"] == "thread.message.failed"
    assert frames[-1] == b"data: [DONE]\n\n"
    assert await world.cleanup.run_once() == 0  # done once; the lease is gone


@pytest.mark.asyncio
async def test_a_live_writer_is_left_alone(world: World) -> None:
    reply = await world.dangling(["still going"], lease_s=30)
    assert await world.cleanup.run_once() == 0
    assert (await world.stored(reply)).status == "streaming"


@pytest.mark.asyncio
async def test_a_stale_reply_without_any_lease_is_found_by_the_postgres_sweep(world: World) -> None:
    reply = await world.dangling(["lost"], lease_s=None)  # Redis lost the lease entirely
    with psycopg.connect(world.owner_dsn) as conn:
        conn.execute("UPDATE thread_messages SET created_at = now() - interval '5 minutes' WHERE id = %s", (reply.id,))
    assert await world.cleanup.run_once() == 1
    assert (await world.stored(reply)).status == "failed"


@pytest.mark.asyncio
async def test_concurrent_cleaners_finalize_once_and_a_late_writer_changes_nothing(world: World) -> None:
    reply = await world.dangling(["x"])
    results = await asyncio.gather(*(StreamCleanup(world.db, world.buffer).reap(TENANT, reply.id) for _ in range(3)))
    assert sum(results) == 1
    async with world.db.tenant_tx(TENANT) as conn:
        late = await store.finish_message(conn, reply.id, status="complete", content=[{"type": "text", "text": "y"}],
                                          input_tokens=1, output_tokens=1, error=None)  # fmt: skip
    assert late is None and (await world.stored(reply)).status == "failed"
    frames = await _collect(world, reply, after=0)
    assert sum(b"thread.message.failed" in f for f in frames) == 1


async def _collect(world: World, reply: MessageRow, *, after: int) -> list[bytes]:
    return [f async for f in world.threads.stream(world.principal, reply.thread_id, reply.id, after)]
