"""A provider's operator settings as an admin operation: name, base_url,
priority, region and status (active | disabled).

Platform operators only (providers are global).  The change is validated
here, written with its audit row in one transaction, then announced through
``CatalogSync`` so every worker routes by it on its next request: a disabled
provider is skipped, a new base_url is called, a new priority reorders routes.

Status is shared with the health monitor: it moves an enabled provider
between active, degraded and down, and never touches a disabled one.  So an
operator only disables or enables; enabling a provider that is already
enabled (degraded or down) leaves the monitor's verdict in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from relay_server.catalog.admin import REGION, Announcer
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import provider_settings as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import ProviderRow
from relay_server.tenancy.calls import Call

UPDATABLE = store.COLUMNS
OPERATOR_STATUSES = ("active", "disabled")
MAX_PRIORITY = 1_000_000
MAX_URL = 2048


def _bad(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def _valid(field: str, value: Any, current: ProviderRow) -> Any:
    """The value as it will be stored (``current``: for the status rule)."""
    param = f"provider.{field}"
    if field == "name":
        name = str(value).strip()
        if not 1 <= len(name) <= 100:
            raise _bad(param, "name must be 1 to 100 characters.")
        return name
    if field == "base_url":
        url = str(value).strip()
        parts = urlsplit(url)
        if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise _bad(param, f"base_url must be an http(s) URL with a host and no query (got {value!r}).")
        return url
    if field == "priority":
        if not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
            raise _bad(param, f"priority must be a whole number from 0 to {MAX_PRIORITY} (lower is tried first).")
        return value
    if field == "region":
        region = str(value).strip() or None
        if region is not None and not REGION.match(region):
            raise _bad(param, f"region must be lower-case letters, digits and - (got {value!r}); empty: none.")
        return region
    status = str(value).strip()
    if status not in OPERATOR_STATUSES:
        raise _bad(param, f"status must be active or disabled (degraded and down are the health monitor's), got {value!r}.")
    if status == "active" and current.status != "disabled":
        return current.status  # already enabled: the health monitor's verdict stands
    return status


class ProviderAdmin:
    def __init__(self, db: Database, announcer: Announcer) -> None:
        self._db = db
        self._announcer = announcer

    async def update(self, call: Call, provider_id: str, values: Mapping[str, Any], mask: Iterable[str]) -> ProviderRow:
        """Change the masked fields of ``values``; returns the provider as stored."""
        call.principal.require_platform("change a provider")
        paths = sorted({p.strip() for p in mask if p.strip()})
        if not paths:
            raise _bad("update_mask", f"Nothing to update: name the fields ({', '.join(UPDATABLE)}).")
        for path in paths:
            if path not in UPDATABLE:
                raise _bad("update_mask", f"`{path}` cannot be updated (updatable: {', '.join(UPDATABLE)}).")
        provider_id = provider_id.strip()
        if not provider_id:
            raise _bad("provider.id", "provider.id is required.")
        async with self._db.system_tx() as conn:
            current = await store.find(conn, provider_id, lock=True)
            if current is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"Unknown provider `{provider_id}`.", param="provider.id")
            wanted = {p: _valid(p, values.get(p), current) for p in paths}
            changed = {p: v for p, v in wanted.items() if getattr(current, p) != v}
            if not changed:
                return current  # nothing to audit or announce
            await store.update(conn, provider_id, changed)
            before = asdict(current)
            await call.audit(
                conn, None, "catalog.provider_updated", resource_type="provider", resource_id=provider_id,
                metadata={"changes": {p: [before[p], v] for p, v in changed.items()}},
            )  # fmt: skip
            after = await store.find(conn, provider_id)
            assert after is not None
        await self._announcer.changed()
        return after
