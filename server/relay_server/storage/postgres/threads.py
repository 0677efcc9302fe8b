"""Threads and their messages (``threads``, ``thread_messages``, migration 0010).

Every function takes a connection inside ``tenant_tx`` (row-level security
confines it to one tenant), except the ``*_any_tenant`` ones used by the stream
cleanup worker on the owner connection.

Sequencing: ``insert_exchange`` locks the thread row (``SELECT … FOR UPDATE``),
checks the idempotency key, then takes two numbers at once with
``UPDATE threads SET next_seq = next_seq + 2 … RETURNING`` — the user message
and the assistant reply that answers it are always adjacent, and concurrent
writers to one thread queue on the row lock, so ``seq`` is 1, 2, 3, … without
gaps or duplicates (a failed transaction rolls its numbers back with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Conn
from relay_server.storage.postgres.response_cache import vector_literal

_THREAD_COLUMNS = "id, tenant_id, end_user_id, api_key_id, title, metadata, message_count, total_tokens, created_at, updated_at"
_MESSAGE_COLUMNS = (
    "m.id, m.tenant_id, m.thread_id, m.seq, m.role, m.content, m.idempotency_key, m.request_id, m.model_id, "
    "m.input_tokens, m.output_tokens, m.status, m.error, m.created_at, m.completed_at"
)
# Visible to end users: no tool messages, no reply that is nothing but tool calls.
_VISIBLE = (
    "(m.role <> 'tool' AND (m.status <> 'complete' OR jsonb_path_exists(m.content, "
    "'$[*] ? (@.type != \"tool_use\" && @.type != \"tool_result\")')))"
)


@dataclass(frozen=True, slots=True)
class ThreadRow:
    id: str
    tenant_id: str
    end_user_id: str | None
    api_key_id: str | None
    title: str | None
    metadata: dict[str, Any] | None
    message_count: int
    total_tokens: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    tenant_id: str
    thread_id: str
    seq: int
    role: str
    content: list[dict[str, Any]]
    idempotency_key: str | None
    request_id: str | None
    model_id: str | None
    input_tokens: int | None
    output_tokens: int | None
    status: str
    error: str | None
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewMessage:
    id: str
    role: str
    content: Sequence[Mapping[str, Any]]
    status: str = "complete"
    request_id: str | None = None
    model_id: str | None = None
    input_tokens: int | None = None
    idempotency_key: str | None = None


def _thread(row: Mapping[str, Any]) -> ThreadRow:
    return ThreadRow(**{k: row[k] for k in ThreadRow.__slots__})


def _message(row: Mapping[str, Any]) -> MessageRow:
    return MessageRow(**{k: row[k] for k in MessageRow.__slots__})


# --- threads ------------------------------------------------------------------


async def insert_thread(
    conn: Conn,
    *,
    thread_id: str,
    tenant_id: str,
    end_user_id: str | None,
    api_key_id: str | None,
    title: str | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[ThreadRow, bool]:
    """(thread, created).  An existing id (an idempotent retry) returns the stored thread unchanged."""
    cur = await conn.execute(
        f"""INSERT INTO threads (id, tenant_id, end_user_id, api_key_id, title, metadata)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO NOTHING
            RETURNING {_THREAD_COLUMNS}""",
        (thread_id, tenant_id, end_user_id, api_key_id, title, Jsonb(dict(metadata)) if metadata is not None else None),
    )
    row = await cur.fetchone()
    if row is not None:
        return _thread(row), True
    cur = await conn.execute(f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = %s", (thread_id,))
    existing = await cur.fetchone()
    if existing is None:  # the id exists but RLS hides it: another tenant's (ids are hashes, so never in practice)
        raise LookupError(thread_id)
    return _thread(existing), False


async def get_thread(
    conn: Conn, thread_id: str, *, end_user_id: str | None = None, for_update: bool = False
) -> ThreadRow | None:
    """A live thread; with ``end_user_id``, only if it belongs to that end user."""
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(
        f"""SELECT {_THREAD_COLUMNS} FROM threads
             WHERE id = %(id)s AND deleted_at IS NULL
               AND (%(eu)s::text IS NULL OR end_user_id = %(eu)s){lock}""",
        {"id": thread_id, "eu": end_user_id},
    )
    row = await cur.fetchone()
    return _thread(row) if row is not None else None


async def list_threads(
    conn: Conn, *, end_user_id: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[ThreadRow]:
    """Newest first; keyset on (created_at, id) so pages never skip or repeat."""
    cur = await conn.execute(
        f"""SELECT {_THREAD_COLUMNS} FROM threads
             WHERE deleted_at IS NULL
               AND (%(eu)s::text IS NULL OR end_user_id = %(eu)s)
               AND (%(at)s::timestamptz IS NULL OR (created_at, id) < (%(at)s, %(aid)s))
             ORDER BY created_at DESC, id DESC
             LIMIT %(n)s""",
        {"eu": end_user_id, "at": after[0] if after else None, "aid": after[1] if after else None, "n": limit},
    )
    return [_thread(r) for r in await cur.fetchall()]


async def delete_thread(conn: Conn, thread_id: str, *, end_user_id: str | None) -> bool:
    cur = await conn.execute(
        """UPDATE threads SET deleted_at = now()
            WHERE id = %(id)s AND deleted_at IS NULL AND (%(eu)s::text IS NULL OR end_user_id = %(eu)s)""",
        {"id": thread_id, "eu": end_user_id},
    )
    return cur.rowcount > 0


# --- messages -----------------------------------------------------------------


async def message_by_idempotency_key(conn: Conn, thread_id: str, key: str) -> MessageRow | None:
    cur = await conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM thread_messages m WHERE m.thread_id = %s AND m.idempotency_key = %s",
        (thread_id, key),
    )
    row = await cur.fetchone()
    return _message(row) if row is not None else None


async def message_at(conn: Conn, thread_id: str, seq: int) -> MessageRow | None:
    cur = await conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM thread_messages m WHERE m.thread_id = %s AND m.seq = %s", (thread_id, seq)
    )
    row = await cur.fetchone()
    return _message(row) if row is not None else None


async def get_message(conn: Conn, thread_id: str, message_id: str) -> MessageRow | None:
    cur = await conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM thread_messages m WHERE m.thread_id = %s AND m.id = %s", (thread_id, message_id)
    )
    row = await cur.fetchone()
    return _message(row) if row is not None else None


async def insert_exchange(
    conn: Conn, *, tenant_id: str, thread_id: str, user: NewMessage, assistant: NewMessage
) -> tuple[MessageRow, MessageRow]:
    """Append the user message and the (streaming) reply slot; the thread must be locked by the caller."""
    cur = await conn.execute(
        """UPDATE threads SET next_seq = next_seq + 2, message_count = message_count + 2
            WHERE id = %s RETURNING next_seq""",
        (thread_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(thread_id)
    last = row["next_seq"]
    out = []
    for message, seq in ((user, last - 1), (assistant, last)):
        cur = await conn.execute(
            f"""INSERT INTO thread_messages AS m (id, tenant_id, thread_id, seq, role, content, idempotency_key,
                                                  request_id, model_id, input_tokens, status, completed_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                        CASE WHEN %s = 'complete' THEN now() END)
                RETURNING {_MESSAGE_COLUMNS}""",
            (message.id, tenant_id, thread_id, seq, message.role, Jsonb([dict(b) for b in message.content]),
             message.idempotency_key, message.request_id, message.model_id, message.input_tokens, message.status,
             message.status),
        )
        out.append(_message(await cur.fetchone()))  # type: ignore[arg-type]
    return out[0], out[1]


async def list_messages(
    conn: Conn, thread_id: str, *, after_seq: int | None, descending: bool, limit: int, include_tools: bool
) -> list[MessageRow]:
    """One page by keyset on ``seq`` (the unique (thread_id, seq) index): never more than ``limit`` rows."""
    op, order = ("<", "DESC") if descending else (">", "ASC")
    visible = "" if include_tools else f" AND {_VISIBLE}"
    cur = await conn.execute(
        f"""SELECT {_MESSAGE_COLUMNS} FROM thread_messages m
             WHERE m.thread_id = %(t)s AND (%(after)s::int IS NULL OR m.seq {op} %(after)s){visible}
             ORDER BY m.seq {order}
             LIMIT %(n)s""",
        {"t": thread_id, "after": after_seq, "n": limit},
    )
    return [_message(r) for r in await cur.fetchall()]


async def history(conn: Conn, thread_id: str, *, limit: int) -> list[MessageRow]:
    """The latest ``limit`` finished messages, oldest first: the prompt of the next run.

    Replies still streaming (another writer's) and failed ones are left out.
    """
    cur = await conn.execute(
        f"""SELECT * FROM (
                SELECT {_MESSAGE_COLUMNS} FROM thread_messages m
                 WHERE m.thread_id = %s AND m.status = 'complete'
                 ORDER BY m.seq DESC LIMIT %s) AS latest
            ORDER BY seq ASC""",
        (thread_id, limit),
    )
    return [_message(r) for r in await cur.fetchall()]


async def finish_message(
    conn: Conn,
    message_id: str,
    *,
    status: str,
    content: Sequence[Mapping[str, Any]],
    input_tokens: int | None,
    output_tokens: int | None,
    error: str | None,
) -> MessageRow | None:
    """Finalize a streaming reply; None if it was already finalized (e.g. by the cleanup job)."""
    cur = await conn.execute(
        f"""UPDATE thread_messages AS m
               SET status = %s, content = %s, input_tokens = %s, output_tokens = %s, error = %s, completed_at = now()
             WHERE m.id = %s AND m.status = 'streaming'
         RETURNING {_MESSAGE_COLUMNS}""",
        (status, Jsonb([dict(b) for b in content]), input_tokens, output_tokens, error, message_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    tokens = (input_tokens or 0) + (output_tokens or 0)
    if tokens:
        await conn.execute("UPDATE threads SET total_tokens = total_tokens + %s WHERE id = %s", (tokens, row["thread_id"]))
    return _message(row)


async def set_embedding(conn: Conn, message_id: str, vector: Sequence[float]) -> None:
    await conn.execute(
        "UPDATE thread_messages SET embedding = %s::vector WHERE id = %s", (vector_literal(vector), message_id)
    )


# --- search -------------------------------------------------------------------


async def search_by_vector(
    conn: Conn, vector: Sequence[float], *, end_user_id: str | None, limit: int
) -> list[tuple[MessageRow, float]]:
    literal = vector_literal(vector)
    await conn.execute("SET LOCAL hnsw.ef_search = 200")
    cur = await conn.execute(
        f"""SELECT {_MESSAGE_COLUMNS}, 1 - (m.embedding <=> %(v)s::vector) AS score
              FROM thread_messages m JOIN threads t ON t.id = m.thread_id
             WHERE m.role = 'assistant' AND m.embedding IS NOT NULL AND t.deleted_at IS NULL
               AND (%(eu)s::text IS NULL OR t.end_user_id = %(eu)s)
             ORDER BY m.embedding <=> %(v)s::vector
             LIMIT %(n)s""",
        {"v": literal, "eu": end_user_id, "n": limit},
    )
    return [(_message(r), float(r["score"])) for r in await cur.fetchall()]


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_by_text(conn: Conn, query: str, *, end_user_id: str | None, limit: int) -> list[MessageRow]:
    """Case-insensitive substring match over the text blocks, newest first."""
    cur = await conn.execute(
        f"""SELECT {_MESSAGE_COLUMNS}
              FROM thread_messages m JOIN threads t ON t.id = m.thread_id
             WHERE m.role = 'assistant' AND m.status = 'complete' AND t.deleted_at IS NULL
               AND (%(eu)s::text IS NULL OR t.end_user_id = %(eu)s)
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(m.content) AS b
                            WHERE b->>'type' = 'text' AND b->>'text' ILIKE %(q)s)
             ORDER BY m.created_at DESC, m.id DESC
             LIMIT %(n)s""",
        {"q": _like_pattern(query), "eu": end_user_id, "n": limit},
    )
    return [_message(r) for r in await cur.fetchall()]


# --- the stream cleanup worker (owner connection) ------------------------------


async def streaming_any_tenant(conn: Conn, *, older_than_s: float, limit: int) -> list[tuple[str, str]]:
    """(tenant_id, message_id) of replies streaming for longer than ``older_than_s``."""
    cur = await conn.execute(
        """SELECT tenant_id, id FROM thread_messages
            WHERE status = 'streaming' AND created_at < now() - make_interval(secs => %s)
            ORDER BY created_at LIMIT %s""",
        (older_than_s, limit),
    )
    return [(r["tenant_id"], r["id"]) for r in await cur.fetchall()]


async def lock_streaming_any_tenant(conn: Conn, message_id: str) -> MessageRow | None:
    """The reply if it is still streaming, locked (skipped if another cleaner holds it)."""
    cur = await conn.execute(
        f"""SELECT {_MESSAGE_COLUMNS} FROM thread_messages m
             WHERE m.id = %s AND m.status = 'streaming' FOR UPDATE SKIP LOCKED""",
        (message_id,),
    )
    row = await cur.fetchone()
    return _message(row) if row is not None else None
