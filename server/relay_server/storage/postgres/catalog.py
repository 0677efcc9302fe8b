"""The model catalog as the pipeline reads it: active models of enabled providers, with their aliases."""

from __future__ import annotations

from relay_server.domain.catalog import CatalogEntry
from relay_server.storage.postgres.pool import Database

_LOAD = """
SELECT m.id, m.relay_name, m.provider_id, p.api AS provider_api, m.provider_name, m.kind,
       m.input_cost_per_1m, m.output_cost_per_1m, m.cache_read_cost_per_1m, m.cache_write_cost_per_1m,
       m.context_window, m.max_output_tokens, m.supports_functions, m.supports_vision, m.supports_json_schema, extract(epoch FROM m.created_at)::bigint AS created,
       ARRAY(SELECT a.alias FROM model_aliases a WHERE a.model_id = m.id ORDER BY a.alias) AS aliases
  FROM models m
  JOIN providers p ON p.id = m.provider_id
 WHERE m.status <> 'disabled' AND p.status <> 'disabled'
 ORDER BY m.relay_name
"""


# What a virtual model checks a target for (pipeline/routing/targets.py) <- the catalog's flags.
_CAPABILITIES = (("tools", "supports_functions"), ("vision", "supports_vision"), ("json_schema", "supports_json_schema"))


class PostgresCatalogStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load_catalog(self) -> list[CatalogEntry]:
        async with self._db.system_tx() as conn:
            rows = await (await conn.execute(_LOAD)).fetchall()
        return [
            CatalogEntry(
                model_id=row["id"],
                relay_name=row["relay_name"],
                provider_id=row["provider_id"],
                provider_api=row["provider_api"],
                provider_name=row["provider_name"],
                kind=row["kind"],
                input_cost_per_1m=row["input_cost_per_1m"],
                output_cost_per_1m=row["output_cost_per_1m"],
                cache_read_cost_per_1m=row["cache_read_cost_per_1m"],
                cache_write_cost_per_1m=row["cache_write_cost_per_1m"],
                context_window=row["context_window"],
                max_output_tokens=row["max_output_tokens"],
                owned_by=row["provider_id"],
                created=int(row["created"]),
                aliases=tuple(row["aliases"] or ()),
                capabilities=tuple(need for need, flag in _CAPABILITIES if row[flag]),
            )
            for row in rows
        ]
