"""The tenant lifecycle: the one place a tenant's status changes.

    provisioning → trial            provisioning complete
    trial        → active | expired payment method added | trial ended
    active       ⇄ suspended        payment failed or operator / payment resolved
    suspended, expired, active → deleted   grace period over / user cancels (soft)

Everything else is refused with a 409 and changes nothing.  Deletion is
final: a deleted tenant is only ever hard-deleted (every row removed) by a
job after the retention period.  ``apply`` runs inside the caller's system
transaction (the provisioning worker seeds roles in the same one);
``transition`` is the whole thing for operators and lifecycle jobs: lock the
row, check, write, audit, commit, then purge caches on every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import timedelta

from relay_server.domain.tenants import TenantRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.storage.postgres.tenants import get_tenant, set_status
from relay_server.tenancy.calls import Call
from relay_server.tenancy.policy_bus import PolicyBus

STATUSES = ("provisioning", "trial", "active", "suspended", "expired", "deleted")

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "provisioning": frozenset({"trial"}),
    "trial": frozenset({"active", "expired"}),
    "active": frozenset({"suspended", "deleted"}),
    "suspended": frozenset({"active", "deleted"}),
    "expired": frozenset({"deleted"}),
    "deleted": frozenset(),
}


def check_transition(current: str, target: str) -> None:
    """Raise unless ``current → target`` is a transition of the state machine."""
    if target not in TRANSITIONS:
        raise RelayError(
            ErrorKind.BAD_REQUEST, f"Unknown tenant status `{target}`; one of {', '.join(STATUSES)}.", param="status"
        )
    if target not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (final)"
        raise RelayError(
            ErrorKind.FAILED_PRECONDITION,
            f"A tenant cannot go from `{current}` to `{target}`. Allowed from `{current}`: {allowed}.",
            param="status",
            code="invalid_status_transition",
        )


class Lifecycle:
    def __init__(
        self,
        db: Database,
        invalidator: PolicyBus,
        *,
        trial_days: int = 14,
    ) -> None:
        self._db = db
        self._invalidator = invalidator
        self._trial = timedelta(days=trial_days)

    async def apply(self, conn: Conn, tenant: TenantRow, target: str, call: Call, reason: str = "") -> TenantRow:
        """Check and write one transition with its audit row, in the caller's system transaction.

        The caller holds the row lock (``get_tenant(..., lock=True)``) and calls
        ``after_commit`` once the transaction is committed.
        """
        check_transition(tenant.status, target)
        updated = await set_status(conn, tenant.id, target, trial_length=self._trial if target == "trial" else None)
        await call.audit(
            conn,
            tenant.id,
            "tenant.status_changed",
            resource_type="tenant",
            resource_id=tenant.id,
            metadata={"from": tenant.status, "to": target, **({"reason": reason} if reason else {})},
        )
        return updated

    async def after_commit(self, tenant_id: str, staged: int | None = None) -> None:
        """Make the committed status visible now: every worker forgets what it cached about the tenant."""
        await self._invalidator.tenant_changed(tenant_id, staged)

    async def transition(
        self,
        tenant_id: str,
        target: str,
        call: Call,
        *,
        reason: str = "",
        only_from: Collection[str] | None = None,
        unless: Callable[[TenantRow], bool] | None = None,
    ) -> TenantRow | None:
        """Move a tenant to ``target``.

        Jobs pass ``only_from`` / ``unless`` to act only on the state they were
        queued for: if the tenant moved on meanwhile (a trial converted while
        its expiry job waited), nothing happens and None is returned.
        """
        async with self._db.system_tx() as conn:
            tenant = await get_tenant(conn, tenant_id, lock=True)
            if tenant is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
            replay = await call.replay_of(conn, "tenant.status_changed", tenant_id)
            if replay is not None and tenant.status == target:
                return tenant  # a retried call: already done
            if only_from is not None and tenant.status not in only_from:
                return None
            if unless is not None and unless(tenant):
                return None
            updated = await self.apply(conn, tenant, target, call, reason)
            staged = await self._invalidator.stage(conn, tenant_id, [("tenant", tenant_id)])
        await self.after_commit(tenant_id, staged)
        return updated
