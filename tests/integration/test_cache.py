"""The response cache over real Postgres (pgvector) and Redis, through the real pipeline.

Provider calls are counted on the test-mode provider: a hit must not reach it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.errors import RelayError
from relay_server.pipeline.steps.cache import CachedMetered
from relay_server.storage.postgres.migrate import apply_migrations
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.response_cache import RedisResponseCache
from tests.integration.test_cache_harness import (
    CraftedEmbedder,
    Harness,
    add_tenant,
    build_harness,
    set_config,
    set_feature,
)
from tests.support.pg import PgCluster, TestDatabase

DEMO = "ten_demo"
BODY = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "What is Relay?"}]}
TTL = {"x-relay-cache-ttl": "600"}


@pytest_asyncio.fixture
async def harness(database: Database, redis_client: Redis, pg_db: TestDatabase) -> AsyncIterator[Harness]:
    """The demo tenant (plan pro) with the exact cache only."""
    built = await build_harness(database, redis_client, pg_db.owner_dsn)
    set_feature(pg_db.owner_dsn, DEMO, "semantic_cache", False)
    yield built


@pytest_asyncio.fixture
async def semantic(database: Database, redis_client: Redis, pg_db: TestDatabase) -> AsyncIterator[Harness]:
    """The demo tenant with its plan's semantic cache, embedding through the pipeline (test mode)."""
    yield await build_harness(database, redis_client, pg_db.owner_dsn)


def _text(response: dict) -> str:
    return response["choices"][0]["message"]["content"]


@pytest.mark.asyncio
async def test_identical_request_twice_is_a_hit_with_no_provider_call(harness: Harness) -> None:
    first, admitted1 = await harness.complete(BODY, harness.auth(**TTL))
    second, admitted2 = await harness.complete(BODY, harness.auth(**TTL))
    assert admitted1.cache.status == "miss" and admitted2.cache.status == "hit"
    assert harness.provider.count("complete") == 1
    assert second == first
    assert dict(admitted2.cache.headers()) == {"x-relay-cache": "hit", "x-relay-cache-kind": "exact"}

    record = harness.recorder.of(admitted2.ctx.request_id)
    assert isinstance(record, CachedMetered)
    assert record.outcome.status == "cached" and record.ctx.provider_id is None
    assert record.cost is not None and record.cost.total_micros == 0
    assert record.cost_saved is not None and record.cost_saved.total_cost > 0
    assert record.cache_kind == "exact" and record.cache_key == admitted1.cache.key
    assert harness.recorder.of(admitted1.ctx.request_id).outcome.status == "success"


@pytest.mark.asyncio
async def test_a_streamed_miss_is_replayed_as_a_proper_stream_and_serves_plain_requests(harness: Harness) -> None:
    chunks, _ = await harness.stream(BODY, harness.auth(**TTL))
    original = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    body = {**BODY, "stream_options": {"include_usage": True}}
    replay, admitted = await harness.stream(body, harness.auth(**TTL))
    assert admitted.cache.status == "hit" and harness.provider.count("stream") == 1
    assert replay[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in replay if c["choices"]) == original
    assert replay[-2]["choices"][0]["finish_reason"] == "stop"
    assert replay[-1]["choices"] == [] and replay[-1]["usage"]["completion_tokens"] > 0
    assert all(c["object"] == "chat.completion.chunk" for c in replay)

    plain, admitted = await harness.complete(BODY, harness.auth(**TTL))
    assert admitted.cache.status == "hit" and _text(plain) == original
    assert harness.provider.count("stream") == 1 and harness.provider.count("complete") == 0


@pytest.mark.asyncio
async def test_a_replayed_stream_hides_usage_unless_asked(harness: Harness) -> None:
    await harness.complete(BODY, harness.auth(**TTL))
    replay, admitted = await harness.stream(BODY, harness.auth(**TTL))
    assert admitted.cache.status == "hit"
    assert replay[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in replay)


@pytest.mark.asyncio
async def test_another_tenant_never_sees_the_entry(harness: Harness) -> None:
    other = add_tenant(harness.owner_dsn, "ten_other")
    _, mine = await harness.complete(BODY, harness.auth(**TTL))
    _, admitted = await harness.complete(BODY, harness.auth(other, **TTL))
    assert admitted.cache.status == "miss" and admitted.cache.key != mine.cache.key
    assert harness.provider.count("complete") == 2
    _, again = await harness.complete(BODY, harness.auth(other, **TTL))
    assert again.cache.status == "hit"  # the other tenant's own entry


@pytest.mark.asyncio
async def test_any_generation_parameter_changes_the_key(harness: Harness) -> None:
    await harness.complete(BODY, harness.auth(**TTL))
    for change in ({"max_tokens": 5}, {"top_p": 0.5}, {"messages": [{"role": "user", "content": "What is relay?"}]}):
        _, admitted = await harness.complete({**BODY, **change}, harness.auth(**TTL))
        assert admitted.cache.status == "miss", change
    # Delivery-only fields do not.
    _, admitted = await harness.complete({**BODY, "user": "u1", "metadata": {"a": "b"}}, harness.auth(**TTL))
    assert admitted.cache.status == "hit"


@pytest.mark.asyncio
async def test_nondeterministic_requests_bypass_unless_the_tenant_opts_in(harness: Harness) -> None:
    sampled = {k: v for k, v in BODY.items() if k != "temperature"}  # OpenAI's default temperature is 1
    tools = {**BODY, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
             "tool_choice": "none"}
    for body in (sampled, tools, {**BODY, "temperature": 0.7}):
        for _ in range(2):
            _, admitted = await harness.complete(body, harness.auth(**TTL))
            assert admitted.cache.status == "bypass"
            assert dict(admitted.cache.headers()) == {"x-relay-cache": "bypass"}
    assert harness.provider.count("complete") == 6
    _, seeded = await harness.complete({**BODY, "temperature": 0.7, "seed": 7}, harness.auth(**TTL))
    assert seeded.cache.status == "miss"

    set_config(harness.owner_dsn, DEMO, cache_nondeterministic="true")
    await harness.complete(sampled, harness.auth(**TTL))
    _, admitted = await harness.complete(sampled, harness.auth(**TTL))
    assert admitted.cache.status == "hit"


@pytest.mark.asyncio
async def test_ttl_comes_from_the_header_then_the_tenant_default_else_caching_is_off(harness: Harness) -> None:
    _, admitted = await harness.complete(BODY, harness.auth())
    assert admitted.cache.status == "off" and admitted.cache.headers() == []

    set_config(harness.owner_dsn, DEMO, default_cache_ttl_sec="120")
    await harness.complete(BODY, harness.auth())
    _, admitted = await harness.complete(BODY, harness.auth())
    assert admitted.cache.status == "hit"
    key = RedisResponseCache.redis_key(DEMO, admitted.cache.key)
    assert 0 < await harness.redis.ttl(key) <= 120

    _, admitted = await harness.complete(BODY, harness.auth(**{"x-relay-cache-ttl": "0"}))
    assert admitted.cache.status == "off"
    await harness.redis.flushdb()
    await harness.complete(BODY, harness.auth(**{"x-relay-cache-ttl": "30"}))
    assert 0 < await harness.redis.ttl(key) <= 30


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["-1", "1.5", "soon", "99999999999"])
async def test_a_malformed_ttl_header_is_a_400_and_is_metered(harness: Harness, value: str) -> None:
    with pytest.raises(RelayError) as caught:
        await harness.complete(BODY, harness.auth(**{"x-relay-cache-ttl": value}))
    assert caught.value.http_status == 400 and caught.value.code == "invalid_header"
    assert harness.provider.calls == []
    assert harness.recorder.records[-1].outcome.status == "error"


@pytest.mark.asyncio
async def test_redis_down_reads_as_a_miss_and_never_fails_the_request(harness: Harness) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    harness.cache._exact = RedisResponseCache(dead)
    for _ in range(2):
        response, admitted = await harness.complete(BODY, harness.auth(**TTL))
        assert admitted.cache.status == "miss" and _text(response)
    assert harness.provider.count("complete") == 2
    await dead.aclose()


# --- semantic ------------------------------------------------------------------------

QUESTION = {"model": "gpt-4o-mini", "temperature": 0, "messages": [
    {"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "a"}]}


def _ask(text: str, system: str = "You answer briefly.") -> dict:
    return {**QUESTION, "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]}


@pytest_asyncio.fixture
async def crafted(database: Database, redis_client: Redis, pg_db: TestDatabase) -> AsyncIterator[Harness]:
    # "a" is the stored question; "b" is 0.97 similar to it, "c" only 0.90.
    embedder = CraftedEmbedder({"a": 1.0, "b": 0.97, "c": 0.90})
    yield await build_harness(database, redis_client, pg_db.owner_dsn, embedder=embedder)


@pytest.mark.asyncio
async def test_semantic_hit_above_the_threshold_and_miss_below(crafted: Harness) -> None:
    original, admitted = await crafted.complete(_ask("a"), crafted.auth(**TTL))
    assert admitted.cache.status == "miss"

    similar, admitted = await crafted.complete(_ask("b"), crafted.auth(**TTL))
    assert admitted.cache.status == "hit" and admitted.cache.hit.kind == "semantic"
    assert admitted.cache.hit.similarity == pytest.approx(0.97, abs=1e-6)
    assert similar == original
    assert dict(admitted.cache.headers())["x-relay-cache-kind"] == "semantic"
    record = crafted.recorder.of(admitted.ctx.request_id)
    assert isinstance(record, CachedMetered) and record.cache_kind == "semantic"

    _, admitted = await crafted.complete(_ask("c"), crafted.auth(**TTL))
    assert admitted.cache.status == "miss"
    assert crafted.provider.count("complete") == 2


@pytest.mark.asyncio
async def test_the_threshold_is_per_tenant(crafted: Harness) -> None:
    set_config(crafted.owner_dsn, DEMO, semantic_cache_threshold="0.98")
    await crafted.complete(_ask("a"), crafted.auth(**TTL))
    _, admitted = await crafted.complete(_ask("b"), crafted.auth(**TTL))
    assert admitted.cache.status == "miss"
    set_config(crafted.owner_dsn, DEMO, semantic_cache_threshold="0.85")
    _, admitted = await crafted.complete(_ask("c"), crafted.auth(**TTL))
    assert admitted.cache.status == "hit"


@pytest.mark.asyncio
async def test_semantic_matches_stay_within_the_same_context(crafted: Harness) -> None:
    await crafted.complete(_ask("a"), crafted.auth(**TTL))
    _, admitted = await crafted.complete(_ask("b", system="You answer in French."), crafted.auth(**TTL))
    assert admitted.cache.status == "miss"
    _, admitted = await crafted.complete({**_ask("b"), "max_tokens": 3}, crafted.auth(**TTL))
    assert admitted.cache.status == "miss"
    other = add_tenant(crafted.owner_dsn, "ten_other")
    _, admitted = await crafted.complete(_ask("b"), crafted.auth(other, **TTL))
    assert admitted.cache.status == "miss"


@pytest.mark.asyncio
async def test_without_the_plan_feature_there_is_no_semantic_lookup(crafted: Harness) -> None:
    free = add_tenant(crafted.owner_dsn, "ten_free", plan="free")
    await crafted.complete(_ask("a"), crafted.auth(free, **TTL))
    _, admitted = await crafted.complete(_ask("b"), crafted.auth(free, **TTL))
    assert admitted.cache.status == "miss" and crafted.embedder.calls == []  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_test_mode_embeddings_through_the_pipeline_match_normalised_prompts(semantic: Harness) -> None:
    harness = semantic
    await harness.complete(_ask("What is Relay?"), harness.auth(**TTL))
    _, admitted = await harness.complete(_ask("  what is   RELAY?"), harness.auth(**TTL))
    assert admitted.cache.status == "hit" and admitted.cache.hit.kind == "semantic"
    assert admitted.cache.hit.similarity == pytest.approx(1.0, abs=1e-5)
    _, admitted = await harness.complete(_ask("What is Envoy?"), harness.auth(**TTL))
    assert admitted.cache.status == "miss"
    # Each lookup embedding was a request of its own, through the pipeline, metered.
    embeddings = [r for r in harness.recorder.records if r.ctx.kind == "embedding"]
    assert len(embeddings) == 3 and all(r.outcome.status == "success" for r in embeddings)
    assert harness.provider.count("embed") == 3 and harness.provider.count("complete") == 2


@pytest.mark.asyncio
async def test_without_pgvector_the_semantic_cache_reports_itself_unavailable(
    pg_cluster: PgCluster, redis_client: Redis
) -> None:
    bare = pg_cluster.create_empty_database(with_vector=False)
    try:
        apply_migrations(bare.owner_dsn, app_password=pg_cluster.app_password)
        async with Database(bare.owner_dsn, bare.app_dsn, min_size=1, max_size=2) as db:
            embedder = CraftedEmbedder({"a": 1.0})
            harness = await build_harness(db, redis_client, bare.owner_dsn, embedder=embedder)
            _, first = await harness.complete(_ask("a"), harness.auth(**TTL))
            _, second = await harness.complete(_ask("a"), harness.auth(**TTL))
            assert first.cache.status == "miss" and second.cache.status == "hit"  # the exact cache still works
            assert ("x-relay-cache-semantic", "unavailable") in first.cache.headers()
            assert embedder.calls == [] and harness.provider.count("complete") == 1
    finally:
        pg_cluster.drop_database(bare)
