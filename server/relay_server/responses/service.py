"""Stored responses: the conversation state behind ``previous_response_id``.

Relay owns every id (``resp_…``, ``msg_…``, ``fc_…``) and the history: a turn that continues a
stored response gets the chain's items — each turn's input items, then its output items, oldest
first — and the door hands them to whichever provider serves this turn (as chat messages, or
inlined in a native Responses body).  So a conversation may move between providers (failover,
another model) and continue correctly.

Every query runs in ``tenant_tx`` (row-level security); a key bound to an end user sees only
that end user's responses.  Rows expire after the tenant's ``response_retention_days``
(tenant config, default 30) and ``store: false`` keeps nothing.  Background responses run as
tasks of this process; ``cancel`` marks the row cancelled (on any worker) and cancels the local
task — a task on another worker finishes its provider call but cannot overwrite the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from relay_server.dialects.responses.request import Turn
from relay_server.domain.request import Principal
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import responses as store
from relay_server.storage.postgres.pool import Database

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30
MAX_PAGE = 100
SWEEP_INTERVAL_S = 300.0


def not_found(response_id: str, param: str | None = None) -> RelayError:
    return RelayError(ErrorKind.NOT_FOUND, f"Response with id '{response_id}' not found.", param=param)


class RetentionSource:
    """How long a tenant's responses are kept (``response_retention_days``)."""

    def __init__(self, read: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self._read = read

    async def days(self, tenant_id: str) -> int:
        if self._read is None:
            return DEFAULT_RETENTION_DAYS
        try:
            config = await self._read(tenant_id)
        except Exception:  # noqa: BLE001 (config unavailable: keep the default rather than fail the request)
            log.warning("tenant config unavailable; default response retention", extra={"tenant_id": tenant_id})
            return DEFAULT_RETENTION_DAYS
        raw = getattr(config, "values", {}).get("response_retention_days")
        return int(raw) if raw else DEFAULT_RETENTION_DAYS


class ResponseStore:
    def __init__(self, db: Database, retention: RetentionSource | None = None) -> None:
        self._db = db
        self._retention = retention or RetentionSource()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- conversation state ------------------------------------------------------------------

    async def history(self, principal: Principal, response_id: str) -> list[dict[str, Any]]:
        """The items of the conversation ending with ``response_id`` (404 when it is unknown,
        expired, deleted, another tenant's, or its chain is broken)."""
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            turns = await store.chain(conn, response_id, principal.end_user_id)
        if not turns:
            raise not_found(response_id, "previous_response_id")
        if turns[0].previous_response_id is not None:
            raise RelayError(
                ErrorKind.NOT_FOUND,
                f"Response '{response_id}' continues '{turns[0].previous_response_id}', which was deleted or has "
                "expired: the conversation cannot be rebuilt.",
                param="previous_response_id",
            )
        if turns[-1].body.get("status") in ("queued", "in_progress"):
            raise RelayError(
                ErrorKind.BAD_REQUEST, f"Response '{response_id}' has not finished yet.", param="previous_response_id"
            )
        items: list[dict[str, Any]] = []
        for turn in turns:
            items.extend(turn.input)
            items.extend(i for i in turn.body.get("output") or [] if isinstance(i, dict))
        return items

    async def save(
        self, principal: Principal, turn: Turn, body: Mapping[str, Any], *, request_id: str | None
    ) -> None:
        """Store a finished (or queued background) response, unless the client said ``store: false``."""
        if not turn.store:
            return
        days = await self._retention.days(principal.tenant_id)
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            await store.insert(
                conn, tenant_id=principal.tenant_id, api_key_id=principal.key_id, end_user_id=principal.end_user_id,
                body=body, input_items=turn.input_items, request_id=request_id, retention=timedelta(days=days),
            )  # fmt: skip

    # -- reads -----------------------------------------------------------------------------

    async def get(self, principal: Principal, response_id: str) -> dict[str, Any]:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            found = await store.get(conn, response_id, principal.end_user_id)
        if found is None:
            raise not_found(response_id)
        return found.body

    async def delete(self, principal: Principal, response_id: str) -> dict[str, Any]:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            deleted = await store.delete(conn, response_id, principal.end_user_id)
        if not deleted:
            raise not_found(response_id)
        task = self._tasks.pop(response_id, None)
        if task is not None:
            task.cancel()
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(
        self, principal: Principal, response_id: str, *, after: str, limit: int, order: str
    ) -> dict[str, Any]:
        if order not in ("", "asc", "desc"):
            raise RelayError(ErrorKind.BAD_REQUEST, "order must be 'asc' or 'desc'.", param="order", code="invalid_value")
        if not 0 <= limit <= MAX_PAGE:
            raise RelayError(ErrorKind.BAD_REQUEST, f"limit must be from 1 to {MAX_PAGE}.", param="limit", code="invalid_value")
        size = limit or 20
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            if await store.get(conn, response_id, principal.end_user_id) is None:
                raise not_found(response_id)
            rows = await store.input_items(
                conn, response_id, after=after or None, limit=size + 1, descending=order != "asc"
            )
        page = rows[:size]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(rows) > size,
        }

    # -- background --------------------------------------------------------------------------

    def run_background(self, response_id: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks[response_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(response_id, None))

    async def start_background(self, principal: Principal, response_id: str) -> bool:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            return await store.start(conn, response_id)

    async def finish_background(self, principal: Principal, body: Mapping[str, Any], *, request_id: str) -> bool:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            return await store.finish(conn, body, request_id=request_id)

    async def cancel(self, principal: Principal, response_id: str) -> dict[str, Any]:
        async with self._db.tenant_tx(principal.tenant_id) as conn:
            found = await store.get(conn, response_id, principal.end_user_id)
            if found is None:
                raise not_found(response_id)
            if not found.background:
                raise RelayError(ErrorKind.BAD_REQUEST, "Only background responses can be cancelled.", param="response_id")
            body = {**found.body, "status": "cancelled", "completed_at": int(time.time())}
            if not await store.cancel(conn, response_id, body):
                return (await store.get(conn, response_id, principal.end_user_id) or found).body  # already ended
        task = self._tasks.pop(response_id, None)
        if task is not None:
            task.cancel()
        return body

    async def close(self, grace_s: float) -> None:
        """Shutdown: let background responses finish for ``grace_s``, then cancel them."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- retention -------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete expired responses (every tenant; the owner connection)."""
        removed = 0
        for _ in range(100):  # bounded per pass
            async with self._db.system_tx() as conn:
                count = await store.delete_expired(conn)
            removed += count
            if count == 0:
                break
        return removed

