"""Reading a tenant's threads as its people (``threads:read``) or as a platform operator.

The thread API itself answers API keys only; the console shows what the keys
stored through this read-only view.  Every query runs in ``tenant_tx`` of the
tenant the principal may act on, so row-level security keeps another
tenant's threads out however the request is written: a thread id of another
tenant is simply not found.
"""

from __future__ import annotations

from datetime import datetime

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.threads import MessageRow, ThreadRow
from relay_server.tenancy.calls import Call

__all__ = ["MessageRow", "ThreadBrowser", "ThreadRow"]

PERMISSION = "threads:read"


class ThreadBrowser:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def threads(
        self, call: Call, tenant: str, *, end_user_id: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[ThreadRow]:
        """Live threads, newest first; ``after`` is the (created_at, id) of the previous page's last one."""
        call.principal.require(PERMISSION)
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            return await store.list_threads(conn, end_user_id=end_user_id, after=after, limit=limit)

    async def messages(
        self, call: Call, tenant: str, thread_id: str, *, after_seq: int | None, limit: int
    ) -> tuple[ThreadRow, list[MessageRow]]:
        """The thread and one page of its messages in ``seq`` order, tool messages included."""
        call.principal.require(PERMISSION)
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            thread = await store.get_thread(conn, thread_id)
            if thread is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"No thread `{thread_id}` in this tenant.", param="thread_id")
            rows = await store.list_messages(
                conn, thread_id, after_seq=after_seq, descending=False, limit=limit, include_tools=True
            )
        return thread, rows
