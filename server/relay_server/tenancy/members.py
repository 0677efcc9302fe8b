"""Dashboard users of a tenant: list, add (with one of the system roles), remove.

Nobody grants what they do not hold: adding or removing a member whose role
carries permissions the caller lacks is refused (so an admin cannot mint an
owner).  The last owner cannot be removed.  Removal takes effect on the
member's next call: dashboard tokens are checked against the database.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.errors import UniqueViolation

from relay_server.domain.tenants import MemberRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres import members as store
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.storage.postgres.tenants import tenant_status
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import SYSTEM_ROLES, AdminPrincipal
from relay_server.tenancy.tenants import EMAIL_PATTERN


def _may_manage(principal: AdminPrincipal, role: str) -> None:
    if principal.is_platform:
        return
    missing = SYSTEM_ROLES.get(role, frozenset()) - principal.permissions
    if missing:
        raise RelayError(
            ErrorKind.PERMISSION_DENIED,
            f"You cannot manage a member with the `{role}` role: it has permissions you do not have.",
        )


async def _usable_tenant(conn: Conn, tenant_id: str) -> None:
    status = await tenant_status(conn, tenant_id)
    if status is None or status == "deleted":
        raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
    if status == "provisioning":
        raise RelayError(ErrorKind.FAILED_PRECONDITION, "The tenant is still being provisioned; try again shortly.", code="tenant_provisioning")


class MemberAdmin:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, call: Call, tenant: str, *, after: tuple[datetime, str] | None, limit: int) -> list[MemberRow]:
        call.principal.require("members:read")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            await _usable_tenant(conn, tenant_id)
            return await store.list_users(conn, tenant_id, after=after, limit=limit)

    async def add(self, call: Call, tenant: str, email: str, name: str, role: str) -> MemberRow:
        call.principal.require("members:create")
        tenant_id = call.principal.tenant_scope(tenant)
        email = email.strip().lower()
        if not EMAIL_PATTERN.match(email):
            raise RelayError(ErrorKind.BAD_REQUEST, "email must be an email address.", param="email")
        if role not in SYSTEM_ROLES:
            raise RelayError(ErrorKind.BAD_REQUEST, f"role must be one of {', '.join(SYSTEM_ROLES)}.", param="role")
        if len(name) > 200:
            raise RelayError(ErrorKind.BAD_REQUEST, "name is at most 200 characters.", param="name")
        _may_manage(call.principal, role)
        try:
            async with self._db.tenant_tx(tenant_id) as conn:
                await _usable_tenant(conn, tenant_id)
                replay = await call.replay_of(conn, "member.added", tenant_id)
                if replay is not None and replay.resource_id:
                    existing = await store.get_user(conn, tenant_id, replay.resource_id)
                    if existing is not None:
                        return existing
                member = await store.insert_user(conn, tenant_id=tenant_id, email=email, name=name.strip() or None, role=role)
                await store.assign_role(conn, tenant_id, member.id, role)
                await call.audit(
                    conn, tenant_id, "member.added", resource_type="user", resource_id=member.id,
                    metadata={"email": email, "role": role},
                )  # fmt: skip
        except UniqueViolation:
            raise RelayError(ErrorKind.CONFLICT, f"A member with email `{email}` already exists.", param="email") from None
        return member

    async def remove(self, call: Call, tenant: str, user_id: str) -> MemberRow:
        call.principal.require("members:delete")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            await _usable_tenant(conn, tenant_id)
            member = await store.get_user(conn, tenant_id, user_id, lock=True)
            if member is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"No member `{user_id}` in this tenant.", param="user_id")
            if member.status == "deleted":
                return member
            _may_manage(call.principal, member.role)
            if member.role == "owner" and await store.count_active_owners(conn, tenant_id) <= 1:
                raise RelayError(ErrorKind.FAILED_PRECONDITION, "The last owner of a tenant cannot be removed.", code="last_owner")
            removed = await store.remove_user(conn, tenant_id, user_id)
            await call.audit(
                conn, tenant_id, "member.removed", resource_type="user", resource_id=user_id,
                metadata={"email": member.email, "role": member.role},
            )  # fmt: skip
        return removed

    async def set_role(self, call: Call, tenant: str, user_id: str, role: str) -> MemberRow:
        """Move a member to another role: the caller must hold both the old and the new role's permissions."""
        call.principal.require("members:update")
        tenant_id = call.principal.tenant_scope(tenant)
        if role not in SYSTEM_ROLES:
            raise RelayError(ErrorKind.BAD_REQUEST, f"role must be one of {', '.join(SYSTEM_ROLES)}.", param="role")
        async with self._db.tenant_tx(tenant_id) as conn:
            await _usable_tenant(conn, tenant_id)
            member = await store.get_user(conn, tenant_id, user_id, lock=True)
            if member is None or member.status == "deleted":
                raise RelayError(ErrorKind.NOT_FOUND, f"No member `{user_id}` in this tenant.", param="user_id")
            if member.role == role:
                return member
            _may_manage(call.principal, member.role)
            _may_manage(call.principal, role)
            if member.role == "owner" and await store.count_active_owners(conn, tenant_id) <= 1:
                raise RelayError(ErrorKind.FAILED_PRECONDITION, "The last owner of a tenant keeps the owner role.", code="last_owner")
            changed = await store.set_role(conn, tenant_id, user_id, role)
            await call.audit(
                conn, tenant_id, "member.role_changed", resource_type="user", resource_id=user_id,
                metadata={"email": member.email, "from": member.role, "to": role},
            )  # fmt: skip
        return changed


class MemberPermissions:
    """What a dashboard user may do now: tokens carry permissions, but every call is checked
    against this, so a removed or demoted member loses access on the next call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def current(self, tenant_id: str, user_id: str) -> frozenset[str] | None:
        """None when the tenant is gone or the user is no longer an active member."""
        async with self._db.tenant_tx(tenant_id) as conn:
            status = await tenant_status(conn, tenant_id)
            held = await store.user_permissions(conn, tenant_id, user_id)
        return None if status is None or status == "deleted" else held
