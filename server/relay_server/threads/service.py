"""The thread operations behind ``relay.v1.ThreadService``.

Callers are API keys (the same as for inference): the key's tenant owns the
threads and every query runs in ``tenant_tx`` for it; a key bound to an end
user (a child key) only ever sees that end user's threads.  The plan feature
``threads`` must be on.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from relay_server.domain.request import Principal
from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.pipeline.steps.embedder import Embedder, usable
from relay_server.pipeline.steps.tenant_flags import FlagSource
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.threads import MessageRow, NewMessage
from relay_server.storage.redis.stream_buffer import RedisStreamBuffer
from relay_server.text import tokens
from relay_server.threads import cursor as cursors
from relay_server.threads import events
from relay_server.threads.blocks import prompt_messages, text_of, validate_blocks, visible
from relay_server.threads.render import message_json, thread_json
from relay_server.threads.runner import ReplyRun, ReplyRunner

MAX_METADATA_BYTES = 16 * 1024
MAX_TEXT_FIELD = 512
# Fields of a run's chat request that Relay sets itself.
_RESERVED = frozenset({"model", "messages", "stream", "stream_options", "n", "tools", "tool_choice"})


class _Authenticator(Protocol):
    async def authenticate(self, metadata: Mapping[str, str]) -> Principal: ...


class _Pipeline(Protocol):
    async def admit(self, kind: Any, body: Mapping[str, Any], metadata: Mapping[str, str], request_id: str) -> Any: ...

    def stream(self, admitted: Any) -> AsyncIterator[dict[str, Any]]: ...


@dataclass(slots=True)
class SendInput:
    thread_id: str
    content: Sequence[Any]
    model: str
    role: str = "user"
    stream: bool = False
    instructions: str = ""
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: Any = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_history_messages: int = 0
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class Sent:
    user_message: MessageRow
    reply: MessageRow
    run: ReplyRun | None
    """None when an idempotent retry found the exchange already there."""


def _bounded(value: int, default: int, maximum: int, param: str) -> int:
    if value < 0 or value > maximum:
        raise RelayError(ErrorKind.INVALID_REQUEST, f"{param} must be between 1 and {maximum}.", param=param)
    return value or default


def _short(value: str, param: str) -> str | None:
    if len(value) > MAX_TEXT_FIELD:
        raise RelayError(ErrorKind.INVALID_REQUEST, f"{param} may be at most {MAX_TEXT_FIELD} characters.", param=param)
    return value or None


def _not_found(what: str, ident: str) -> RelayError:
    return RelayError(ErrorKind.NOT_FOUND, f"No {what} found with id '{ident}'.", param=f"{what}_id")


class Threads:
    def __init__(
        self,
        db: Database,
        authenticator: _Authenticator,
        pipeline: _Pipeline,
        buffer: RedisStreamBuffer,
        runner: ReplyRunner,
        flags: FlagSource,
        *,
        validate_body: Callable[[Mapping[str, Any]], object] = lambda body: None,
        embedder: Embedder | None = None,
    ) -> None:
        self._db = db
        self._auth = authenticator
        self._pipeline = pipeline
        self._buffer = buffer
        self._runner = runner
        self._flags = flags
        self._validate_body = validate_body
        self._embedder = embedder

    async def caller(self, metadata: Mapping[str, str]) -> Principal:
        principal = await self._auth.authenticate(metadata)
        if not (await self._flags.flags(principal.tenant_id)).threads:
            raise RelayError(ErrorKind.PERMISSION_DENIED, "Threads are not enabled for your plan.")
        return principal

    @staticmethod
    def _end_user(principal: Principal, requested: str) -> str | None:
        """The end user a call is confined to: the key's own, or what the caller asked for."""
        if principal.end_user_id is not None:
            if requested and requested != principal.end_user_id:
                raise RelayError(ErrorKind.PERMISSION_DENIED, "This key may only access its own end user's threads.",
                                 param="end_user_id")
            return principal.end_user_id
        return _short(requested, "end_user_id")

    # --- threads ----------------------------------------------------------------

    async def create_thread(
        self, principal: Principal, *, end_user_id: str, title: str, metadata: Mapping[str, Any] | None, idempotency_key: str
    ) -> dict[str, Any]:
        if metadata is not None and len(orjson.dumps(dict(metadata))) > MAX_METADATA_BYTES:
            raise RelayError(ErrorKind.INVALID_REQUEST, f"metadata may be at most {MAX_METADATA_BYTES} bytes.",
                             param="metadata")
        owner = self._end_user(principal, end_user_id)
        if idempotency_key:
            # The id is a function of the key, so a retry lands on the same row.
            digest = hashlib.sha256(f"{principal.tenant_id}\x00{idempotency_key}".encode()).hexdigest()[:24]
            thread_id = f"thr_{digest}"
        else:
            thread_id = new_id("thr")
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            row, _ = await store.insert_thread(
                conn, thread_id=thread_id, tenant_id=principal.tenant_id, end_user_id=owner,
                api_key_id=principal.key_id, title=_short(title, "title"), metadata=metadata,
            )
        if principal.end_user_id is not None and row.end_user_id != principal.end_user_id:
            raise RelayError(ErrorKind.CONFLICT, "The Idempotency-Key was already used for another end user's thread.")
        return thread_json(row)

    async def get_thread(self, principal: Principal, thread_id: str) -> dict[str, Any]:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            row = await store.get_thread(conn, thread_id, end_user_id=principal.end_user_id)
        if row is None:
            raise _not_found("thread", thread_id)
        return thread_json(row)

    async def list_threads(
        self, principal: Principal, *, end_user_id: str, limit: int, cursor: str
    ) -> tuple[list[dict[str, Any]], str]:
        owner = self._end_user(principal, end_user_id)
        size = _bounded(limit, 20, 100, "limit")
        after = cursors.parse_thread_cursor(cursor, owner) if cursor else None
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            rows = await store.list_threads(conn, end_user_id=owner, after=after, limit=size + 1)
        page = rows[:size]
        next_cursor = cursors.thread_cursor(page[-1].created_at, page[-1].id, owner) if len(rows) > size else ""
        return [thread_json(r) for r in page], next_cursor

    async def delete_thread(self, principal: Principal, thread_id: str) -> None:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            deleted = await store.delete_thread(conn, thread_id, end_user_id=principal.end_user_id)
        if not deleted:
            raise _not_found("thread", thread_id)

    # --- sending --------------------------------------------------------------------

    def _run_body(self, send: SendInput, history: Sequence[MessageRow], blocks: list[dict[str, Any]]) -> dict[str, Any]:
        messages = [{"role": "system", "content": send.instructions}] if send.instructions else []
        messages += prompt_messages([(m.role, m.content) for m in history] + [(send.role, blocks)])
        body: dict[str, Any] = {k: v for k, v in send.extra_body.items() if k not in _RESERVED}
        body.update(model=send.model, messages=messages, stream=True, stream_options={"include_usage": True})
        if send.tools:
            body["tools"] = [dict(t) for t in send.tools]
        if send.tool_choice is not None:
            body["tool_choice"] = send.tool_choice
        if send.temperature is not None:
            body["temperature"] = send.temperature
        if send.max_tokens is not None:
            body["max_tokens"] = send.max_tokens
        self._validate_body(body)
        return body

    async def send(self, principal: Principal, metadata: Mapping[str, str], send: SendInput, request_id: str) -> Sent:
        """Persist the message and its reply slot, and start producing the reply.

        The thread row stays locked from the idempotency check through the
        pipeline's admission to the inserts: a refused request (limits, spend
        cap, unknown model) leaves nothing behind, and concurrent sends to one
        thread queue up instead of interleaving.
        """
        blocks = validate_blocks(send.role or "user", send.content)
        if not send.model:
            raise RelayError(ErrorKind.BAD_REQUEST, "you must provide a model parameter", param="model")
        history_limit = _bounded(send.max_history_messages, 100, 1000, "max_history_messages")
        key = _short(send.idempotency_key, "idempotency_key")
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            thread = await store.get_thread(conn, send.thread_id, end_user_id=principal.end_user_id, for_update=True)
            if thread is None:
                raise _not_found("thread", send.thread_id)
            if key is not None:
                existing = await store.message_by_idempotency_key(conn, thread.id, key)
                if existing is not None:
                    reply = await store.message_at(conn, thread.id, existing.seq + 1)
                    assert reply is not None, "a sent message always has its reply slot"
                    return Sent(existing, reply, None)
            history = await store.history(conn, thread.id, limit=history_limit)
            body = self._run_body(send, history, blocks)
            admitted = await self._pipeline.admit("chat", body, metadata, request_id)
            model_id = admitted.entry.model_id
            text = text_of(blocks) or "".join(str(b.get("content", "")) for b in blocks)
            user, reply = await store.insert_exchange(
                conn, tenant_id=principal.tenant_id, thread_id=thread.id,
                user=NewMessage(new_id("msg"), send.role or "user", blocks, request_id=request_id, model_id=model_id,
                                input_tokens=tokens.count_text(text, admitted.entry.relay_name), idempotency_key=key),
                assistant=NewMessage(new_id("msg"), "assistant", [], status="streaming", request_id=request_id,
                                     model_id=model_id),
            )
        run = ReplyRun(principal.tenant_id, user, reply, admitted, metadata)
        self._runner.start(run)
        return Sent(user, reply, run)

    async def wait(self, principal: Principal, sent: Sent) -> Sent:
        """The exchange once the reply is finished (produced here or by another worker)."""
        async for _ in self.stream(principal, sent.reply.thread_id, sent.reply.id, 0):
            pass
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            reply = await store.get_message(conn, sent.reply.thread_id, sent.reply.id)
        return Sent(sent.user_message, reply or sent.reply, sent.run)

    # --- reading --------------------------------------------------------------------

    async def _thread_message(self, principal: Principal, thread_id: str, message_id: str) -> MessageRow:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            thread = await store.get_thread(conn, thread_id, end_user_id=principal.end_user_id)
            message = await store.get_message(conn, thread_id, message_id) if thread is not None else None
        if thread is None:
            raise _not_found("thread", thread_id)
        if message is None:
            raise _not_found("message", message_id)
        return message

    async def _content(self, row: MessageRow) -> list[dict[str, Any]]:
        """Stored content; for a reply still streaming, what the buffer holds so far."""
        if row.status != "streaming":
            return row.content
        try:
            buffered = await events.buffered(self._buffer, row.tenant_id, row.id)
        except Exception:  # noqa: BLE001 (Redis trouble: show what Postgres has)
            return row.content
        return events.partial_blocks([e.payload for e in buffered])

    async def message_json(self, row: MessageRow, include_tools: bool = True) -> dict[str, Any]:
        return message_json(row, visible(await self._content(row), include_tools))

    async def get_message(self, principal: Principal, thread_id: str, message_id: str, include_tools: bool) -> dict[str, Any]:
        return await self.message_json(await self._thread_message(principal, thread_id, message_id), include_tools)

    async def list_messages(
        self, principal: Principal, thread_id: str, *, limit: int, cursor: str, order: str, include_tools: bool
    ) -> tuple[list[dict[str, Any]], str]:
        if order not in ("", "asc", "desc"):
            raise RelayError(ErrorKind.BAD_REQUEST, "order must be 'asc' or 'desc'.", param="order")
        descending = order == "desc"
        size = _bounded(limit, 50, 200, "limit")
        after = cursors.parse_message_cursor(cursor, thread_id, descending, include_tools) if cursor else None
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            if await store.get_thread(conn, thread_id, end_user_id=principal.end_user_id) is None:
                raise _not_found("thread", thread_id)
            rows = await store.list_messages(
                conn, thread_id, after_seq=after, descending=descending, limit=size + 1, include_tools=include_tools
            )
        page = rows[:size]
        next_cursor = cursors.message_cursor(thread_id, page[-1].seq, descending, include_tools) if len(rows) > size else ""
        return [await self.message_json(r, include_tools) for r in page], next_cursor

    async def stream(self, principal: Principal, thread_id: str, message_id: str, after: int) -> AsyncIterator[bytes]:
        """SSE frames of an assistant reply after event ``after`` (see ``events.tail``)."""
        if after < 0:
            raise RelayError(ErrorKind.BAD_REQUEST, "starting_after must not be negative.", param="starting_after")
        message = await self._thread_message(principal, thread_id, message_id)
        if message.role != "assistant":
            raise RelayError(ErrorKind.BAD_REQUEST, "Only assistant messages have a stream.", param="message_id")

        async def load() -> MessageRow | None:
            async with self._db.tenant_tx(principal.tenant_id) as conn:
                return await store.get_message(conn, thread_id, message_id)

        async for chunk in events.tail(self._buffer, principal.tenant_id, message_id, after, load=load):
            yield chunk

    async def search(
        self, principal: Principal, metadata: Mapping[str, str], *, query: str, end_user_id: str, limit: int
    ) -> tuple[list[tuple[dict[str, Any], float]], str]:
        """(results, method): vector search where pgvector and embeddings are on, else text match."""
        if not query.strip():
            raise RelayError(ErrorKind.BAD_REQUEST, "query must not be empty.", param="query")
        owner = self._end_user(principal, end_user_id)
        size = _bounded(limit, 10, 50, "limit")
        flags = await self._flags.flags(principal.tenant_id)
        vector = None
        if flags.vector_available and flags.thread_embeddings and self._embedder is not None:
            try:
                vector = await self._embedder.embed(metadata, flags.embedding_model, query)
            except Exception:  # noqa: BLE001 (a refused or failed embedding falls back to text search)
                vector = None
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            if usable(vector):
                found = await store.search_by_vector(conn, vector, end_user_id=owner, limit=size)  # type: ignore[arg-type]
                method = "vector"
            else:
                found = [(row, 0.0) for row in await store.search_by_text(conn, query, end_user_id=owner, limit=size)]
                method = "text"
        return [(message_json(row, visible(row.content, False)), score) for row, score in found], method
