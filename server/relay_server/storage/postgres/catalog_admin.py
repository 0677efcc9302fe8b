"""The catalog as operators edit it: models with their aliases and extra routes.

Every function runs in the caller's transaction (the admin call's, which also
writes the audit row).  ``models`` is global (no tenant), so these run on the
system pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Conn


@dataclass(frozen=True, slots=True)
class RouteSpec:
    provider_id: str
    provider_name: str
    priority: int | None = None  # None: the provider's own priority
    status: str = "active"  # active | disabled
    region: str | None = None  # data residency; None: the provider's region


@dataclass(frozen=True, slots=True)
class ModelRecord:
    id: str
    relay_name: str
    provider_id: str
    provider_name: str
    display_name: str
    kind: str
    input_cost_per_1m: Decimal
    output_cost_per_1m: Decimal
    context_window: int
    cache_read_cost_per_1m: Decimal | None = None
    cache_write_cost_per_1m: Decimal | None = None
    max_output_tokens: int | None = None
    embedding_dimensions: int | None = None
    supports_streaming: bool = True
    supports_functions: bool = False
    supports_vision: bool = False
    supports_json_schema: bool = False
    status: str = "active"
    aliases: tuple[str, ...] = ()
    routes: tuple[RouteSpec, ...] = ()


_COLUMNS = (
    "id, relay_name, provider_id, provider_name, display_name, kind, input_cost_per_1m, output_cost_per_1m, "
    "context_window, cache_read_cost_per_1m, cache_write_cost_per_1m, max_output_tokens, embedding_dimensions, "
    "supports_streaming, supports_functions, supports_vision, supports_json_schema, status"
)
_MODEL_FIELDS = _COLUMNS.split(", ")


async def _complete(conn: Conn, rows: list[dict]) -> list[ModelRecord]:
    """Attach each model's aliases and routes (two queries for the whole list)."""
    ids = [r["id"] for r in rows]
    aliases: dict[str, list[str]] = {}
    routes: dict[str, list[RouteSpec]] = {}
    if ids:
        cur = await conn.execute("SELECT alias, model_id FROM model_aliases WHERE model_id = ANY(%s) ORDER BY alias", (ids,))
        for row in await cur.fetchall():
            aliases.setdefault(row["model_id"], []).append(row["alias"])
        cur = await conn.execute(
            "SELECT model_id, provider_id, provider_name, priority, status, region FROM model_routes"
            " WHERE model_id = ANY(%s) ORDER BY provider_id",
            (ids,),
        )
        for row in await cur.fetchall():
            routes.setdefault(row["model_id"], []).append(
                RouteSpec(row["provider_id"], row["provider_name"], row["priority"], row["status"], row["region"])
            )
    return [
        ModelRecord(**{k: r[k] for k in _MODEL_FIELDS}, aliases=tuple(aliases.get(r["id"], ())), routes=tuple(routes.get(r["id"], ())))
        for r in rows
    ]


async def list_models(conn: Conn) -> list[ModelRecord]:
    """Every model, whatever its status, by relay name."""
    rows = await (await conn.execute(f"SELECT {_COLUMNS} FROM models ORDER BY relay_name")).fetchall()
    return await _complete(conn, rows)


async def find_model(conn: Conn, name: str, *, lock: bool = False) -> ModelRecord | None:
    """The model whose relay name (or id) is ``name``; ``lock`` holds its row until commit."""
    query = f"SELECT {_COLUMNS} FROM models WHERE relay_name = %s OR id = %s ORDER BY relay_name = %s DESC LIMIT 1"
    if lock:
        query += " FOR UPDATE"
    row = await (await conn.execute(query, (name, name, name))).fetchone()
    return (await _complete(conn, [row]))[0] if row is not None else None


async def provider_ids(conn: Conn) -> set[str]:
    return {r["id"] for r in await (await conn.execute("SELECT id FROM providers")).fetchall()}


async def names_taken(conn: Conn, names: list[str], model_id: str) -> dict[str, str]:
    """Which of ``names`` already name another model (as relay name, id or alias): name -> what holds it."""
    if not names:
        return {}
    cur = await conn.execute(
        """SELECT relay_name AS name, 'the model ' || relay_name AS holder FROM models
            WHERE relay_name = ANY(%(n)s) AND id <> %(m)s
           UNION ALL
           SELECT id, 'the model ' || relay_name FROM models WHERE id = ANY(%(n)s) AND id <> %(m)s
           UNION ALL
           SELECT a.alias, 'an alias of ' || m.relay_name FROM model_aliases a JOIN models m ON m.id = a.model_id
            WHERE a.alias = ANY(%(n)s) AND a.model_id <> %(m)s""",
        {"n": names, "m": model_id},
    )
    return {r["name"]: r["holder"] for r in await cur.fetchall()}


async def save_model(conn: Conn, record: ModelRecord, *, exists: bool) -> None:
    """Insert or update the model row, and replace its aliases and routes with the record's."""
    values = {k: getattr(record, k) for k in _MODEL_FIELDS}
    if exists:
        sets = ", ".join(f"{k} = %({k})s" for k in _MODEL_FIELDS if k != "id")
        await conn.execute(f"UPDATE models SET {sets} WHERE id = %(id)s", values)
    else:
        placeholders = ", ".join(f"%({k})s" for k in _MODEL_FIELDS)
        await conn.execute(f"INSERT INTO models ({_COLUMNS}) VALUES ({placeholders})", values)
    await conn.execute("DELETE FROM model_aliases WHERE model_id = %s", (record.id,))
    for alias in record.aliases:
        await conn.execute("INSERT INTO model_aliases (alias, model_id) VALUES (%s, %s)", (alias, record.id))
    await conn.execute("DELETE FROM model_routes WHERE model_id = %s", (record.id,))
    for route in record.routes:
        await conn.execute(
            "INSERT INTO model_routes (model_id, provider_id, provider_name, priority, status, region)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (record.id, route.provider_id, route.provider_name, route.priority, route.status, route.region),
        )


async def delete_model(conn: Conn, model_id: str) -> None:
    """Delete the model (its aliases and routes go with it).

    Requests, usage rows and cached responses keep a reference to the model
    they were billed against; such a model cannot be deleted, only disabled.
    """
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction survives the refusal
            await conn.execute("DELETE FROM plan_models WHERE model_id = %s", (model_id,))
            await conn.execute("DELETE FROM models WHERE id = %s", (model_id,))
    except psycopg.errors.ForeignKeyViolation:
        raise RelayError(
            ErrorKind.FAILED_PRECONDITION,
            f"The model `{model_id}` has request history and cannot be deleted; set its status to `disabled` instead.",
            param="relay_name",
        ) from None
