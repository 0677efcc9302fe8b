"""The web console's platform-side needs: which tenants an email belongs to,
and a record of every sign-in attempt and password change in those tenants'
audit logs.

Both cross tenants, so both are for platform operators only (the console
holds the admin token; no tenant credential can ask about another email).
A sign-in or a password change is audited as the member concerned (actor
``user``), in every tenant that member belongs to, so each tenant's owners see attempts on
their people; an email that belongs to no tenant (an operator, a typo, a
guess) is recorded once as a platform event.
"""

from __future__ import annotations

from typing import Any

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import members as store
from relay_server.storage.postgres.audit import AuditEntry, insert_audit
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.tenants import EMAIL_PATTERN

SIGN_IN_OUTCOMES = ("succeeded", "failed", "locked")
# How a console password changed: set through an invitation link, or reset through a reset link.
PASSWORD_CHANGES = {"set": "dashboard.password_set", "reset": "dashboard.password_reset"}
_MAX_EMAIL = 320


def _email(value: str) -> str:
    email = value.strip().lower()
    if not email or len(email) > _MAX_EMAIL:
        raise RelayError(ErrorKind.BAD_REQUEST, "email is required.", param="email")
    return email


class AccountAdmin:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def memberships(self, call: Call, email: str) -> list[dict[str, Any]]:
        call.principal.require_platform("look up an account's memberships")
        async with self._db.system_tx() as conn:
            return await store.memberships_by_email(conn, _email(email))

    async def record_sign_in(self, call: Call, email: str, outcome: str, ip_address: str) -> int:
        """Write the attempt's audit rows; returns how many."""
        call.principal.require_platform("record sign-ins")
        email = _email(email)
        if outcome not in SIGN_IN_OUTCOMES:
            raise RelayError(ErrorKind.BAD_REQUEST, f"outcome must be one of {', '.join(SIGN_IN_OUTCOMES)}.", param="outcome")
        return await self._record(call, email, f"dashboard.sign_in_{outcome}", ip_address)

    async def record_password_change(self, call: Call, email: str, change: str, ip_address: str) -> int:
        """Write the password change's audit rows (never the password or the link); returns how many."""
        call.principal.require_platform("record password changes")
        email = _email(email)
        action = PASSWORD_CHANGES.get(change.strip())
        if action is None:
            raise RelayError(ErrorKind.BAD_REQUEST, f"change must be one of {', '.join(PASSWORD_CHANGES)}.", param="change")
        return await self._record(call, email, action, ip_address)

    async def _record(self, call: Call, email: str, action: str, ip_address: str) -> int:
        # A malformed email is still an attempt worth recording, but never echoed into a tenant's log.
        known = EMAIL_PATTERN.match(email) is not None
        async with self._db.system_tx() as conn:
            rows = await store.memberships_by_email(conn, email) if known else []
            for row in rows:
                await insert_audit(conn, AuditEntry(
                    tenant_id=row["tenant_id"], actor_id=row["user_id"], actor_type="user", action=action,
                    resource_type="dashboard_account", resource_id=email, metadata={"email": email},
                    ip_address=ip_address or None, request_id=call.audit_request_id,
                ))  # fmt: skip
            if not rows:
                await insert_audit(conn, AuditEntry(
                    tenant_id=None, actor_id="dashboard", actor_type="system", action=action,
                    resource_type="dashboard_account", resource_id=email[:_MAX_EMAIL],
                    metadata={"email": email}, ip_address=ip_address or None, request_id=call.audit_request_id,
                ))  # fmt: skip
        return max(1, len(rows))
