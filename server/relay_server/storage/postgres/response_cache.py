"""Semantic response cache entries (``response_cache``, migration 0008).

Called inside ``tenant_tx``, so row-level security confines every statement to
the caller's tenant on top of the explicit ``tenant_id`` filters.

``request_hash`` holds the entry's *semantic scope*: the hash of the request
without its last user message (``pipeline.cache_key.semantic_scope``).  A
lookup only compares embeddings within one scope, so a cached answer is never
served for a different system prompt, earlier conversation or parameters.
The embedding column exists only where pgvector does
(``relay_semantic_cache_available()``); callers ask before using these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from relay_server.storage.postgres.pool import Conn

# HNSW returns its ef_search nearest rows before the scope filter applies;
# a wider beam keeps a filtered lookup from coming back empty.
_EF_SEARCH = 200


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    id: str
    cache_key: str
    response: dict[str, Any]
    similarity: float


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form; ``repr`` round-trips every float exactly."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


async def semantic_available(conn: Conn) -> bool:
    cur = await conn.execute("SELECT relay_semantic_cache_available() AS ok")
    row = await cur.fetchone()
    return bool(row and row["ok"])


async def find_similar(
    conn: Conn,
    *,
    tenant_id: str,
    environment: str,
    model_id: str,
    scope: str,
    vector: Sequence[float],
    threshold: float,
) -> SemanticMatch | None:
    """The most similar unexpired entry of the scope, if its cosine similarity reaches ``threshold``."""
    literal = vector_literal(vector)
    await conn.execute(f"SET LOCAL hnsw.ef_search = {_EF_SEARCH}")
    cur = await conn.execute(
        """SELECT id, cache_key, response_body, 1 - (embedding <=> %(v)s::vector) AS similarity
             FROM response_cache
            WHERE tenant_id = %(t)s AND environment = %(e)s AND model_id = %(m)s AND request_hash = %(s)s
              AND expires_at > now() AND embedding IS NOT NULL
            ORDER BY embedding <=> %(v)s::vector
            LIMIT 1""",
        {"v": literal, "t": tenant_id, "e": environment, "m": model_id, "s": scope},
    )
    row = await cur.fetchone()
    if row is None or row["similarity"] is None or float(row["similarity"]) < threshold:
        return None
    await conn.execute(
        "UPDATE response_cache SET hit_count = hit_count + 1, last_hit_at = now() WHERE id = %s", (row["id"],)
    )
    return SemanticMatch(row["id"], row["cache_key"], row["response_body"], float(row["similarity"]))


async def upsert_entry(
    conn: Conn,
    *,
    entry_id: str,
    tenant_id: str,
    environment: str,
    cache_key: str,
    model_id: str,
    scope: str,
    response: Mapping[str, Any],
    input_tokens: int,
    output_tokens: int,
    vector: Sequence[float],
    ttl_s: int,
) -> None:
    await conn.execute(
        """INSERT INTO response_cache (id, tenant_id, environment, cache_key, model_id, request_hash,
                                       response_body, input_tokens, output_tokens, embedding, expires_at)
           VALUES (%(id)s, %(t)s, %(e)s, %(k)s, %(m)s, %(s)s, %(body)s, %(in)s, %(out)s, %(v)s::vector,
                   now() + make_interval(secs => %(ttl)s))
           ON CONFLICT (tenant_id, cache_key) DO UPDATE
              SET response_body = EXCLUDED.response_body, request_hash = EXCLUDED.request_hash,
                  input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
                  embedding = EXCLUDED.embedding, expires_at = EXCLUDED.expires_at""",
        {
            "id": entry_id, "t": tenant_id, "e": environment, "k": cache_key, "m": model_id, "s": scope,
            "body": Jsonb(dict(response)), "in": input_tokens, "out": output_tokens,
            "v": vector_literal(vector), "ttl": ttl_s,
        },
    )


async def delete_expired(conn: Conn, *, limit: int = 1000) -> int:
    """Remove up to ``limit`` expired entries (owner connection: every tenant)."""
    cur = await conn.execute(
        """DELETE FROM response_cache WHERE id IN (
               SELECT id FROM response_cache WHERE expires_at <= now() LIMIT %s FOR UPDATE SKIP LOCKED)""",
        (limit,),
    )
    return cur.rowcount
