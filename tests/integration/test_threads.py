"""Threads over real Postgres and Redis: sequencing, idempotency, resumable
streams, history paging, tool calls as history, scoping and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import psycopg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.api.openai_wire import validate
from relay_server.domain.request import Principal, new_request_id
from relay_server.errors import RelayError
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.stream_buffer import RedisStreamBuffer, create_stream_redis
from relay_server.threads.runner import ReplyRunner
from relay_server.threads.service import SendInput, Threads
from tests.integration.test_cache_harness import Harness, add_tenant, build_harness, set_config
from tests.support.pg import TestDatabase

MODEL = "gpt-4o-mini"


@dataclass
class Env:
    harness: Harness
    threads: Threads
    runner: ReplyRunner
    buffer: RedisStreamBuffer
    principal: Principal

    def meta(self, key: str | None = None) -> dict[str, str]:
        return self.harness.auth(key)

    async def as_key(self, key: str) -> Principal:
        return await self.threads.caller(self.meta(key))

    async def send(self, thread_id: str, text: str, *, principal: Principal | None = None, key: str | None = None,
                   **kw) -> object:  # fmt: skip
        send = SendInput(thread_id=thread_id, content=[{"type": "text", "text": text}], model=kw.pop("model", MODEL), **kw)
        return await self.threads.send(principal or self.principal, self.meta(key), send, new_request_id())

    async def exchange(self, thread_id: str, text: str, **kw) -> object:
        sent = await self.send(thread_id, text, **kw)
        return await self.threads.wait(self.principal, sent)

    async def thread(self, end_user_id: str = "eu1") -> str:
        made = await self.threads.create_thread(self.principal, end_user_id=end_user_id, title="", metadata=None,
                                                idempotency_key="")  # fmt: skip
        return made["id"]


async def _env(database: Database, redis_client: Redis, pg_db: TestDatabase, redis_server: RedisHandle,
               chunk_delay_s: float) -> AsyncIterator[Env]:  # fmt: skip
    harness = await build_harness(database, redis_client, pg_db.owner_dsn, chunk_delay_s=chunk_delay_s)
    stream_redis = create_stream_redis(redis_server.url, block_ms=1000)
    buffer = RedisStreamBuffer(stream_redis)
    runner = ReplyRunner(database, buffer, harness.pipeline, flags=harness.flags, embedder=harness.embedder)
    threads = Threads(database, harness.pipeline._auth, harness.pipeline, buffer, runner, harness.flags,
                      validate_body=lambda body: validate("chat", body), embedder=harness.embedder)  # fmt: skip
    principal = await threads.caller(harness.auth())
    yield Env(harness, threads, runner, buffer, principal)
    await runner.close(5)
    await stream_redis.aclose()


@pytest_asyncio.fixture
async def env(database, redis_client, pg_db, redis_server) -> AsyncIterator[Env]:
    async for e in _env(database, redis_client, pg_db, redis_server, 0.0):
        yield e


@pytest_asyncio.fixture
async def slow(database, redis_client, pg_db, redis_server) -> AsyncIterator[Env]:
    async for e in _env(database, redis_client, pg_db, redis_server, 0.02):
        yield e


def _text(message: dict) -> str:
    return "".join(b["text"] for b in message["content"] if b["type"] == "text")


# --- threads -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_threads_of_an_end_user_page_by_cursor(env: Env) -> None:
    mine = [await env.thread("eu1") for _ in range(5)]
    await env.thread("eu2")
    seen, cursor = [], ""
    while True:
        page, cursor = await env.threads.list_threads(env.principal, end_user_id="eu1", limit=2, cursor=cursor)
        assert len(page) <= 2
        seen += [t["id"] for t in page]
        if not cursor:
            break
    assert seen == list(reversed(mine))  # newest first, each once
    with pytest.raises(RelayError) as bad:
        await env.threads.list_threads(env.principal, end_user_id="eu1", limit=2, cursor="not-a-cursor")
    assert bad.value.http_status == 400
    _, cursor = await env.threads.list_threads(env.principal, end_user_id="eu1", limit=2, cursor="")
    with pytest.raises(RelayError) as other:
        await env.threads.list_threads(env.principal, end_user_id="eu2", limit=2, cursor=cursor)
    assert other.value.http_status == 400


@pytest.mark.asyncio
async def test_create_with_an_idempotency_key_returns_the_same_thread(env: Env) -> None:
    made = [await env.threads.create_thread(env.principal, end_user_id="eu1", title="t", metadata={"topic": "x"},
                                            idempotency_key="create-1") for _ in range(2)]  # fmt: skip
    assert made[0]["id"] == made[1]["id"] and made[0]["metadata"] == {"topic": "x"}
    page, _ = await env.threads.list_threads(env.principal, end_user_id="eu1", limit=10, cursor="")
    assert len(page) == 1


@pytest.mark.asyncio
async def test_a_key_bound_to_an_end_user_sees_only_its_threads(env: Env) -> None:
    theirs = await env.thread("eu2")
    bound = await env.as_key(add_tenant(env.harness.owner_dsn, "ten_demo", end_user_id="eu1"))
    made = await env.threads.create_thread(bound, end_user_id="", title="", metadata=None, idempotency_key="")
    assert made["end_user_id"] == "eu1"
    with pytest.raises(RelayError) as hidden:
        await env.threads.get_thread(bound, theirs)
    assert hidden.value.http_status == 404
    with pytest.raises(RelayError) as denied:
        await env.threads.list_threads(bound, end_user_id="eu2", limit=10, cursor="")
    assert denied.value.http_status == 403
    page, _ = await env.threads.list_threads(bound, end_user_id="", limit=10, cursor="")
    assert [t["id"] for t in page] == [made["id"]]


@pytest.mark.asyncio
async def test_another_tenant_cannot_reach_a_thread(env: Env) -> None:
    thread = await env.thread()
    other = await env.as_key(add_tenant(env.harness.owner_dsn, "ten_other"))
    for call in (env.threads.get_thread(other, thread),
                 env.send(thread, "hi", principal=other),
                 env.threads.list_messages(other, thread, limit=10, cursor="", order="", include_tools=False)):
        with pytest.raises(RelayError) as caught:
            await call
        assert caught.value.http_status == 404


# --- sending ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_send_persists_both_messages_with_tokens_and_request_ids(env: Env) -> None:
    thread = await env.thread()
    sent = await env.exchange(thread, "Hello there")
    user, reply = sent.user_message, sent.reply
    assert (user.seq, reply.seq) == (1, 2) and user.role == "user" and reply.role == "assistant"
    assert reply.status == "complete" and _text({"content": reply.content})
    assert user.request_id == reply.request_id and reply.request_id.startswith("req_")
    assert user.input_tokens and user.input_tokens > 0
    assert reply.input_tokens and reply.output_tokens and reply.output_tokens > 0
    info = await env.threads.get_thread(env.principal, thread)
    assert info["message_count"] == 2 and info["total_tokens"] == reply.input_tokens + reply.output_tokens

    await env.exchange(thread, "And again", instructions="Be brief.")
    prompt = env.harness.provider.bodies[-1]["messages"]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[2]["content"] == _text({"content": reply.content})


@pytest.mark.asyncio
async def test_concurrent_writers_get_distinct_gap_free_seq(env: Env) -> None:
    thread = await env.thread()

    async def writer(name: str) -> list[object]:
        return [await env.send(thread, f"{name} {i}") for i in range(4)]

    results = await asyncio.gather(writer("tab-a"), writer("tab-b"), *(env.send(thread, f"x{i}") for i in range(4)))
    sent = [s for group in results for s in (group if isinstance(group, list) else [group])]
    seqs = sorted(s for x in sent for s in (x.user_message.seq, x.reply.seq))
    assert seqs == list(range(1, 25))
    assert all(x.reply.seq == x.user_message.seq + 1 for x in sent)
    for x in sent:
        await env.threads.wait(env.principal, x)


@pytest.mark.asyncio
async def test_a_retried_send_with_the_same_idempotency_key_creates_one_message(env: Env) -> None:
    thread = await env.thread()
    first = await env.exchange(thread, "Once", idempotency_key="k-1")
    again = await env.send(thread, "Once", idempotency_key="k-1")
    assert again.run is None
    assert (again.user_message.id, again.reply.id) == (first.user_message.id, first.reply.id)
    racing = await asyncio.gather(*(env.send(thread, "Twice", idempotency_key="k-2") for _ in range(3)))
    assert len({r.user_message.id for r in racing}) == 1 and sum(r.run is not None for r in racing) == 1
    await env.threads.wait(env.principal, racing[0])
    page, _ = await env.threads.list_messages(env.principal, thread, limit=50, cursor="", order="", include_tools=True)
    assert [m["seq"] for m in page] == [1, 2, 3, 4]
    assert env.harness.provider.count("stream") == 2


@pytest.mark.asyncio
async def test_refused_sends_leave_nothing_behind(env: Env) -> None:
    thread = await env.thread()
    bad = [
        (dict(content=[{"type": "tool_result", "tool_use_id": "x", "content": "y"}]), 422),
        (dict(content=[]), 422),
        (dict(content=[{"type": "image", "url": "ftp://x"}]), 422),
        (dict(content=[{"type": "text", "text": "hi"}], model=""), 400),
        (dict(content=[{"type": "text", "text": "hi"}], model="no-such-model"), 404),
        (dict(content=[{"type": "text", "text": "hi"}], max_history_messages=5000), 422),
        (dict(content=[{"type": "text", "text": "hi"}], temperature=7.0), 422),
    ]
    for fields, status in bad:
        send = SendInput(thread_id=thread, **{"model": MODEL, **fields})
        with pytest.raises(RelayError) as caught:
            await env.threads.send(env.principal, env.meta(), send, new_request_id())
        assert caught.value.http_status == status, fields
    sent = await env.exchange(thread, "fine")
    assert sent.user_message.seq == 1  # nothing was consumed by the refusals


# --- resumable streams -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_dropped_client_resumes_and_gets_the_message_byte_for_byte(slow: Env) -> None:
    thread = await slow.thread()
    sent = await slow.send(thread, "Tell me a story", stream=True)
    frames = slow.threads.stream(slow.principal, thread, sent.reply.id, 0)
    before = [await anext(frames) for _ in range(3)]
    await frames.aclose()  # the client went away; the reply goes on

    refreshed = await slow.threads.get_message(slow.principal, thread, sent.reply.id, False)
    assert refreshed["status"] == "streaming"  # refresh shows the reply as it grows

    after = [f async for f in slow.threads.stream(slow.principal, thread, sent.reply.id, 3)]
    full = [f async for f in slow.threads.stream(slow.principal, thread, sent.reply.id, 0)]
    assert b"".join(before + after) == b"".join(full)
    assert full[-1] == b"data: [DONE]\n\n" and [f.split(b"\n")[0] for f in full[:3]] == [b"id: 1", b"id: 2", b"id: 3"]

    deltas = [orjson.loads(f.split(b"data: ", 1)[1]) for f in full[:-1]]
    assert deltas[0]["object"] == "thread.message.created" and deltas[-1]["object"] == "thread.message.completed"
    streamed = "".join(d["delta"].get("content", "") for d in deltas if d["object"] == "thread.message.delta")
    stored = await slow.threads.get_message(slow.principal, thread, sent.reply.id, False)
    assert stored["status"] == "complete" and _text(stored) == streamed == _text(deltas[-1]["message"])


@pytest.mark.asyncio
async def test_stream_of_an_unknown_message_or_a_user_message_is_refused(env: Env) -> None:
    thread = await env.thread()
    sent = await env.exchange(thread, "hi")
    for message_id, after, status in (("msg_nope", 0, 404), (sent.user_message.id, 0, 400), (sent.reply.id, -1, 400)):
        with pytest.raises(RelayError) as caught:
            async for _ in env.threads.stream(env.principal, thread, message_id, after):
                pass
        assert caught.value.http_status == status


@pytest_asyncio.fixture
async def slower(database, redis_client, pg_db, redis_server) -> AsyncIterator[Env]:
    async for e in _env(database, redis_client, pg_db, redis_server, 0.5):
        yield e


@pytest.mark.asyncio
async def test_shutdown_interrupts_a_reply_and_persists_it_as_failed(slower: Env) -> None:
    slow = slower
    thread = await slow.thread()
    sent = await slow.send(thread, "Tell me a long story", stream=True)
    frames = slow.threads.stream(slow.principal, thread, sent.reply.id, 0)
    started = [await anext(frames) for _ in range(2)]  # created, then the first delta: the reply is mid-way
    await frames.aclose()
    assert b"thread.message.delta" in started[1]
    await slow.runner.close(grace_s=0)
    stored = await slow.threads.get_message(slow.principal, thread, sent.reply.id, False)
    assert stored["status"] == "failed" and "interrupted" in stored["error"]
    frames = [f async for f in slow.threads.stream(slow.principal, thread, sent.reply.id, 0)]
    assert b"thread.message.failed" in frames[-2] and frames[-1] == b"data: [DONE]\n\n"


# --- history ------------------------------------------------------------------------


def _bulk_messages(owner_dsn: str, tenant_id: str, thread_id: str, count: int) -> None:
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            """INSERT INTO thread_messages (id, tenant_id, thread_id, seq, role, content)
               SELECT 'msg_bulk_' || g, %s, %s, g, CASE WHEN g %% 2 = 1 THEN 'user' ELSE 'assistant' END,
                      jsonb_build_array(jsonb_build_object('type', 'text', 'text', 'message ' || g))
                 FROM generate_series(1, %s) AS g""",
            (tenant_id, thread_id, count),
        )
        conn.execute("UPDATE threads SET next_seq = %s, message_count = %s WHERE id = %s", (count, count, thread_id))


@pytest.mark.asyncio
async def test_a_6000_message_thread_pages_by_keyset_in_bounded_pages(env: Env) -> None:
    thread = await env.thread()
    _bulk_messages(env.harness.owner_dsn, "ten_demo", thread, 6000)
    seqs, cursor, pages = [], "", 0
    while True:
        page, cursor = await env.threads.list_messages(env.principal, thread, limit=200, cursor=cursor, order="",
                                                       include_tools=False)  # fmt: skip
        assert len(page) == 200 or (not cursor and len(page) <= 200)
        seqs += [m["seq"] for m in page]
        pages += 1
        if pages == 10:  # new messages arriving mid-way neither shift nor repeat pages
            await env.exchange(thread, "late arrival")
        if not cursor:
            break
    assert seqs == list(range(1, 6003)) and pages == 31
    async with env.harness.db.tenant_tx("ten_demo") as conn:
        rows = await store.list_messages(conn, thread, after_seq=100, descending=True, limit=51, include_tools=False)
    assert [r.seq for r in rows] == list(range(99, 48, -1))


@pytest.mark.asyncio
async def test_malformed_or_foreign_message_cursors_are_400(env: Env) -> None:
    thread, other = await env.thread(), await env.thread()
    _bulk_messages(env.harness.owner_dsn, "ten_demo", thread, 10)
    _, cursor = await env.threads.list_messages(env.principal, thread, limit=3, cursor="", order="", include_tools=False)
    for tid, cur, order in ((thread, "!!!", ""), (thread, cursor[:-4], ""), (other, cursor, ""), (thread, cursor, "desc")):
        with pytest.raises(RelayError) as caught:
            await env.threads.list_messages(env.principal, tid, limit=3, cursor=cur, order=order, include_tools=False)
        assert caught.value.http_status == 400
    with pytest.raises(RelayError):
        await env.threads.list_messages(env.principal, thread, limit=201, cursor="", order="", include_tools=False)


@pytest.mark.asyncio
async def test_tool_calls_are_history_hidden_from_end_user_reads_unless_asked(env: Env) -> None:
    thread = await env.thread()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    called = await env.exchange(thread, "Weather in Paris?", tools=tools, tool_choice="required")
    use = [b for b in called.reply.content if b["type"] == "tool_use"]
    assert use and use[0]["name"] == "get_weather" and "city" in use[0]["input"]

    result = SendInput(thread_id=thread, role="tool", model=MODEL, tools=tools, content=[
        {"type": "tool_result", "tool_use_id": use[0]["id"], "content": "18C and sunny"}])
    answered = await env.threads.wait(env.principal, await env.threads.send(env.principal, env.meta(), result, new_request_id()))
    assert answered.reply.status == "complete" and any(b["type"] == "text" for b in answered.reply.content)
    prompt = env.harness.provider.bodies[-1]["messages"]
    assert prompt[1]["tool_calls"][0]["id"] == use[0]["id"]
    assert prompt[2] == {"role": "tool", "tool_call_id": use[0]["id"], "content": "18C and sunny"}

    visible, _ = await env.threads.list_messages(env.principal, thread, limit=10, cursor="", order="", include_tools=False)
    assert [m["role"] for m in visible] == ["user", "assistant"] and visible[1]["seq"] == 4
    everything, _ = await env.threads.list_messages(env.principal, thread, limit=10, cursor="", order="", include_tools=True)
    assert [m["role"] for m in everything] == ["user", "assistant", "tool", "assistant"]


@pytest.mark.asyncio
async def test_search_uses_vectors_where_available_else_text(env: Env) -> None:
    thread = await env.thread()
    sent = await env.exchange(thread, "Say something")
    answer = _text({"content": sent.reply.content})
    for _ in range(50):  # the embedding is written just after the reply completes
        if env.runner.running == 0:
            break
        await asyncio.sleep(0.01)
    found, method = await env.threads.search(env.principal, env.meta(), query=answer, end_user_id="", limit=5)
    assert method == "vector" and found[0][0]["id"] == sent.reply.id and found[0][1] == pytest.approx(1.0, abs=1e-5)

    set_config(env.harness.owner_dsn, "ten_demo", thread_embeddings="false")
    word = answer.split()[0]
    found, method = await env.threads.search(env.principal, env.meta(), query=word.upper(), end_user_id="", limit=5)
    assert method == "text" and [m["id"] for m, _ in found] == [sent.reply.id]
    found, _ = await env.threads.search(env.principal, env.meta(), query="%", end_user_id="", limit=5)
    assert found == [] or all("%" in _text(m) for m, _ in found)
    with pytest.raises(RelayError):
        await env.threads.search(env.principal, env.meta(), query="  ", end_user_id="", limit=5)
