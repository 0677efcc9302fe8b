"""Reading the audit log: a tenant's events (inside its RLS-scoped transaction), or the
platform's own actions (``tenant_id`` None: hard deletions, which no tenant can see)."""

from __future__ import annotations

from datetime import datetime

from relay_server.domain.audit import AuditRow
from relay_server.storage.postgres.audit import list_audit
from relay_server.storage.postgres.pool import Database


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def events(
        self,
        tenant_id: str | None,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        action: str | None = None,
        resource_id: str | None = None,
        every_tenant: bool = False,
    ) -> list[AuditRow]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last event.

        ``every_tenant`` (platform operators only; the caller checks) reads across tenants.
        """
        tx = self._db.system_tx() if tenant_id is None else self._db.tenant_tx(tenant_id)
        async with tx as conn:
            return await list_audit(
                conn, tenant_id=tenant_id, after=after, limit=limit, action=action, resource_id=resource_id,
                every_tenant=every_tenant,
            )  # fmt: skip
