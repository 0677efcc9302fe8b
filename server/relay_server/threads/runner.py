"""Producing an assistant reply in the background, independent of any client.

A send starts one ``ReplyRun`` task.  It runs the admitted chat completion
through the ``InferencePipeline``, appends every event to the reply's buffer
as it lands, keeps a writer lease while it works, and finally persists the
reply (content blocks, token counts, status) in ``thread_messages`` — also when
the client that asked went away, which is what makes a reply resumable.

Finishing is guarded by ``status = 'streaming'``: if the cleanup worker
reaped this reply (the lease lapsed), the late writer finds nothing to update
and emits nothing more.  On shutdown, runs get the grace period to finish;
the rest are cancelled and persisted as failed ("interrupted").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.steps.embedder import Embedder, usable
from relay_server.pipeline.steps.tenant_flags import FlagSource
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.threads import MessageRow
from relay_server.storage.redis.stream_buffer import BufferClosed, RedisStreamBuffer
from relay_server.text.chunks import ChunkAssembler
from relay_server.threads import events
from relay_server.threads.blocks import reply_blocks, text_of
from relay_server.threads.render import message_json

log = logging.getLogger(__name__)

LEASE_S = 30.0
INTERRUPTED = "The reply was interrupted before it finished."


class _Pipeline(Protocol):
    def stream(self, admitted: Any) -> AsyncIterator[dict[str, Any]]: ...


@dataclass(slots=True)
class ReplyRun:
    tenant_id: str
    user_message: MessageRow
    reply: MessageRow
    admitted: Any
    """The pipeline's ``Admitted`` for this run (auth, limits and spend already passed)."""
    metadata: Mapping[str, str]
    index: int = 0
    buffering: bool = True
    final: MessageRow | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ReplyRunner:
    def __init__(
        self,
        db: Database,
        buffer: RedisStreamBuffer,
        pipeline: _Pipeline,
        *,
        flags: FlagSource | None = None,
        embedder: Embedder | None = None,
        lease_s: float = LEASE_S,
    ) -> None:
        self._db = db
        self._buffer = buffer
        self._pipeline = pipeline
        self._flags = flags
        self._embedder = embedder
        self._lease_s = lease_s
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, run: ReplyRun) -> asyncio.Task[None]:
        task = asyncio.create_task(self._produce(run), name=f"thread-reply-{run.reply.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def close(self, grace_s: float = 10.0) -> None:
        """Let runs finish for ``grace_s``, then interrupt (and persist) the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _emit(self, run: ReplyRun, payload: bytes) -> None:
        if not run.buffering:
            return
        run.index += 1
        try:
            await self._buffer.append(run.tenant_id, run.reply.id, run.index, payload)
        except (RedisError, OSError):
            # The reply is still produced and persisted; only live following and resuming are lost.
            run.buffering = False
            log.warning("thread stream buffer unavailable", extra={"message_id": run.reply.id}, exc_info=True)

    async def _keepalive(self, run: ReplyRun) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self._buffer.renew_lease(run.tenant_id, run.reply.id, self._lease_s)
            await asyncio.sleep(self._lease_s / 3)

    async def _produce(self, run: ReplyRun) -> None:
        keepalive = asyncio.create_task(self._keepalive(run))
        assembler = ChunkAssembler("chat")
        error: RelayError | None = None
        cancelled = False
        chunks = self._pipeline.stream(run.admitted)
        try:
            await self._emit(run, events.created(message_json(run.reply), message_json(run.user_message)))
            async for chunk in chunks:
                assembler.add(chunk)
                value = events.delta_of(chunk)
                if value is not None:
                    await self._emit(run, events.delta(run.reply.id, value))
        except BufferClosed:
            log.info("thread reply was finalized elsewhere; writer stops", extra={"message_id": run.reply.id})
            run.done.set()
            return
        except asyncio.CancelledError:
            cancelled = True
            error = RelayError(ErrorKind.REQUEST_TIMEOUT, INTERRUPTED, code="interrupted")
        except RelayError as exc:
            error = exc
        except Exception:  # noqa: BLE001 (every failure is persisted on the message, without internals)
            log.exception("thread reply failed", extra={"message_id": run.reply.id})
            error = RelayError(ErrorKind.INTERNAL, "The server had an error while producing the reply.")
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
            keepalive.cancel()
        try:
            await asyncio.shield(self._finish(run, assembler, error))
        finally:
            run.done.set()
        if cancelled:
            raise asyncio.CancelledError
        if error is None and run.final is not None:
            await self._embed(run)

    async def _finish(self, run: ReplyRun, assembler: ChunkAssembler, error: RelayError | None) -> None:
        if error is None and not assembler.finished:
            error = RelayError(ErrorKind.PROVIDER_ERROR, "The model's reply ended before it was complete.")
        usage = run.admitted.ctx.usage
        content = reply_blocks(assembler.text(), assembler.tool_calls())
        async with self._db.tenant_tx(run.tenant_id) as conn:
            final = await store.finish_message(
                conn,
                run.reply.id,
                status="failed" if error is not None else "complete",
                content=content,
                input_tokens=usage.prompt_tokens if usage else None,
                output_tokens=usage.completion_tokens if usage else None,
                error=error.message if error is not None else None,
            )
        run.final = final
        if final is None:
            return  # reaped by the cleanup worker, which also wrote the terminal event
        try:
            if error is not None:
                await self._emit(run, events.failed(message_json(final), error.body()["error"]))
            else:
                await self._emit(run, events.completed(message_json(final)))
        except BufferClosed:
            pass
        with contextlib.suppress(RedisError, OSError):
            await self._buffer.release_lease(run.tenant_id, run.reply.id)

    async def _embed(self, run: ReplyRun) -> None:
        """Index the reply for search (pgvector only); a failure only costs searchability."""
        final = run.final
        if final is None or self._embedder is None or self._flags is None:
            return
        text = text_of(final.content)
        if not text:
            return
        try:
            flags = await self._flags.flags(run.tenant_id)
            if not (flags.vector_available and flags.thread_embeddings):
                return
            vector = await self._embedder.embed(run.metadata, flags.embedding_model, text)
            if not usable(vector):
                return
            async with self._db.tenant_tx(run.tenant_id) as conn:
                await store.set_embedding(conn, final.id, vector)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            log.warning("thread message embedding failed", extra={"message_id": final.id}, exc_info=True)
