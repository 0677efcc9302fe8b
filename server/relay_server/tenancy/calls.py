"""One admin call: who made it, from where, under which request id — and
the two things every mutating call does with that: write its audit row in
the same transaction, and recognise a retry of an earlier call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay_server.domain.audit import AuditRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.audit import AuditEntry, find_replay, insert_audit
from relay_server.storage.postgres.pool import Conn
from relay_server.tenancy.rbac import ALL_PERMISSIONS, AdminPrincipal

_ACTOR_TYPES = {"platform_admin": "platform_admin", "user": "user", "api_key": "api_key", "system": "system"}
MAX_REQUEST_ID = 128


@dataclass(frozen=True, slots=True)
class Call:
    principal: AdminPrincipal
    request_id: str  # the server's id of this call (req_…)
    ip: str | None = None
    idempotency_key: str = ""  # the client's request_id field, when given

    @property
    def audit_request_id(self) -> str:
        return self.idempotency_key or self.request_id

    def with_idempotency_key(self, key: str) -> Call:
        key = key.strip()
        if len(key) > MAX_REQUEST_ID:
            raise RelayError(ErrorKind.BAD_REQUEST, f"request_id is longer than {MAX_REQUEST_ID} characters.", param="request_id")
        return Call(self.principal, self.request_id, self.ip, key)

    async def audit(
        self,
        conn: Conn,
        tenant_id: str | None,
        action: str,
        *,
        resource_type: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the action in the caller's transaction (so both commit or neither)."""
        await insert_audit(
            conn,
            AuditEntry(
                tenant_id=tenant_id,
                actor_id=self.principal.actor_id,
                actor_type=_ACTOR_TYPES[self.principal.kind],
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                metadata=dict(metadata or {}),
                ip_address=self.ip,
                request_id=self.audit_request_id,
            ),
        )

    async def replay_of(self, conn: Conn, action: str, tenant_id: str | None) -> AuditRow | None:
        """The audit row of an earlier call with the same client request_id, if any.

        Takes a transaction-scoped advisory lock on the request id first, so two
        concurrent retries cannot both miss each other and act twice.
        """
        if not self.idempotency_key:
            return None
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("relay-idem:" + self.idempotency_key,))
        return await find_replay(conn, request_id=self.idempotency_key, action=action, tenant_id=tenant_id)


SYSTEM = AdminPrincipal(kind="system", actor_id="system", permissions=ALL_PERMISSIONS)


def system_call(request_id: str) -> Call:
    """Background jobs act as ``system`` in the audit log."""
    return Call(SYSTEM, request_id)
