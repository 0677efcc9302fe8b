"""Reading the provider event log (``ListProviderEvents``): platform operators only.

Filters are checked here, so a bad kind or an empty time range is a 400 that names
the field, never a query that silently matches nothing.
"""

from __future__ import annotations

from datetime import datetime

from relay_server.domain.provider_events import EVENT_KINDS, ProviderEventRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.provider_events import PostgresProviderEvents
from relay_server.tenancy.calls import Call

MAX_PROVIDER_ID = 128


class ProviderEventReader:
    def __init__(self, db: Database) -> None:
        self._store = PostgresProviderEvents(db)

    async def events(
        self,
        call: Call,
        *,
        provider_id: str = "",
        kind: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int,
    ) -> list[ProviderEventRow]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last event."""
        call.principal.require_platform("list provider events")
        provider_id, kind = provider_id.strip(), kind.strip()
        if len(provider_id) > MAX_PROVIDER_ID:
            raise RelayError(ErrorKind.BAD_REQUEST, "provider_id is too long.", param="provider_id")
        if kind and kind not in EVENT_KINDS:
            raise RelayError(ErrorKind.BAD_REQUEST, f"kind must be one of {', '.join(EVENT_KINDS)}.", param="kind")
        if since is not None and until is not None and since >= until:
            raise RelayError(ErrorKind.BAD_REQUEST, "start_time must be before end_time.", param="start_time")
        return await self._store.list(
            provider_id=provider_id or None, kind=kind or None, since=since, until=until, after=after, limit=limit
        )
