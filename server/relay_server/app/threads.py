"""The response cache and threads, assembled from settings and shared resources.

``relay_server.app`` calls ``build_conversations`` before it builds the pipeline (the
pipeline consults the cache), then ``bind(pipeline, …)`` (threads run their
replies through the pipeline, and embeddings are routed through it too).
Threads need Redis for their stream buffers; without it ``threads`` is None
and the service answers FAILED_PRECONDITION (409) saying so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from relay_server.pipeline.steps.cache import ResponseCache
from relay_server.pipeline.steps.embedder import PipelineEmbedder
from relay_server.pipeline.steps.tenant_flags import PostgresTenantFlags
from relay_server.settings import Settings
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.response_cache import RedisResponseCache
from relay_server.storage.redis.stream_buffer import RedisStreamBuffer, create_stream_redis
from relay_server.threads.runner import ReplyRunner
from relay_server.threads.service import Threads
from relay_server.workers.runner import BackgroundRunner, Periodic
from relay_server.workers.stream_cleanup import INTERVAL_S, StreamCleanup

TAIL_BLOCK_MS = 1000


@dataclass
class Conversations:
    settings: Settings
    db: Database
    flags: PostgresTenantFlags
    embedder: PipelineEmbedder
    cache: ResponseCache
    buffer: RedisStreamBuffer | None = None
    stream_redis: Redis | None = None
    runner: ReplyRunner | None = None
    threads: Threads | None = None

    def bind(self, pipeline: Any, *, authenticator: Any, validate_chat: Callable[[Mapping[str, Any]], object]) -> None:
        self.embedder.bind(pipeline)
        if self.buffer is None:
            return
        self.runner = ReplyRunner(self.db, self.buffer, pipeline, flags=self.flags, embedder=self.embedder)
        self.threads = Threads(
            self.db, authenticator, pipeline, self.buffer, self.runner, self.flags,
            validate_body=validate_chat, embedder=self.embedder,
        )  # fmt: skip

    async def stop(self) -> None:
        """Let running replies finish (then interrupt and persist them), close the stream client."""
        if self.runner is not None:
            await self.runner.close(self.settings.shutdown_grace_s)
        if self.stream_redis is not None:
            with contextlib.suppress(Exception):
                await self.stream_redis.aclose()


def build_conversations(settings: Settings, db: Database, redis: Redis | None, runner: BackgroundRunner) -> Conversations:
    flags = PostgresTenantFlags(db, ttl_s=settings.policy_cache_ttl_s)
    embedder = PipelineEmbedder()
    cache = ResponseCache(flags, RedisResponseCache(redis) if redis is not None else None, db, embedder)
    conversations = Conversations(settings, db, flags, embedder, cache)
    if settings.redis_url:
        conversations.stream_redis = create_stream_redis(settings.redis_url, block_ms=TAIL_BLOCK_MS)
        conversations.buffer = RedisStreamBuffer(conversations.stream_redis)
        cleanup = StreamCleanup(db, conversations.buffer)
        runner.add_periodic(Periodic("thread-stream-cleanup", INTERVAL_S, cleanup.run_once))
    return conversations
