"""A model as the catalog knows it: provider, provider-side name, prices, limits."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    model_id: str
    relay_name: str
    provider_id: str
    provider_api: str
    provider_name: str
    kind: str  # chat | completion | embedding
    input_cost_per_1m: Decimal
    output_cost_per_1m: Decimal
    context_window: int
    max_output_tokens: int | None
    owned_by: str
    created: int
    cache_read_cost_per_1m: Decimal | None = None
    cache_write_cost_per_1m: Decimal | None = None
    aliases: tuple[str, ...] = ()  # other names that resolve to this model
    capabilities: tuple[str, ...] | None = None  # tools | vision | json_schema (the catalog's supports_*); None: unknown

    def supports(self, needs: frozenset[str]) -> bool:
        return self.capabilities is None or needs <= set(self.capabilities)
