"""Data residency: a tenant restricted to regions (tenant_config ``allowed_regions``) never
reaches a route outside them — not first, not on failover, not through a fallback model.

Routes carry their region (``model_routes.region``, else ``providers.region``); a route
without a declared region is outside every restriction.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay_server.errors import ErrorKind, RelayError, clip
from relay_server.storage.postgres.providers import RouteRow


def in_region(route: RouteRow, regions: Sequence[str]) -> bool:
    return not regions or (route.region is not None and route.region in regions)


def outside_regions(model: str, regions: Sequence[str]) -> RelayError:
    return RelayError(
        ErrorKind.PERMISSION_DENIED,
        f"`{clip(model)}` has no route in this tenant's allowed regions ({', '.join(regions)}): data residency "
        f"keeps its requests inside them.",
        param="model",
        code="region_not_allowed",
    )
