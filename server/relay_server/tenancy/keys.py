"""API key management: create, list, get, update, revoke, rotate.

Every query runs in ``tenant_tx`` of the tenant the principal may act on, so
a key id of another tenant is simply not found.  Management keys see and
change only child keys (minted under a management key, scope inference);
the keys they mint inherit their environment — a test master key cannot mint
a live key.  Each change writes its audit row in the same transaction and,
after commit, purges the key from every worker's caches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from relay_server.domain.keys import ApiKeyRow, NewKey, mint_key
from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.storage.postgres import api_keys as store
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.tenancy import key_rules as rules
from relay_server.tenancy.calls import Call
from relay_server.tenancy.policy_bus import PolicyBus, key_tags


@dataclass(frozen=True, slots=True)
class KeyRequest:
    name: str
    environment: str | None = None  # None: live (a management key: its own)
    scope: str | None = None  # None: inference
    end_user_id: str = ""
    allowed_models: tuple[str, ...] = ()
    rate_limits: Mapping[str, int] = field(default_factory=dict)
    spend_cap_amount: str = ""
    spend_cap_window: str | None = None
    expires_at: datetime | None = None
    # A child of this management key (people and operators); a management key's keys are its own children.
    parent_key_id: str = ""


@dataclass(frozen=True, slots=True)
class KeyPatch:
    """An update: only the names in ``fields`` change (name, expire_time,
    allowed_models, rate_limits, spend_cap); an empty value clears."""

    fields: frozenset[str]
    name: str = ""
    expires_at: datetime | None = None
    allowed_models: tuple[str, ...] = ()
    rate_limits: Mapping[str, int] = field(default_factory=dict)
    spend_cap_amount: str = ""
    spend_cap_window: str | None = None


PATCHABLE = frozenset({"name", "expire_time", "allowed_models", "rate_limits", "spend_cap"})


def _not_found(key_id: str) -> RelayError:
    return RelayError(ErrorKind.NOT_FOUND, f"No API key `{key_id}` in this tenant.", param="key_id")


class ApiKeyService:
    def __init__(
        self,
        db: Database,
        invalidator: PolicyBus,
        *,
        model_exists: Callable[[str], bool],
        rotation_grace_s: int = 86400,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._invalidator = invalidator
        self._model_exists = model_exists
        self._grace = rotation_grace_s
        self._now = now

    # --- reads -------------------------------------------------------------------------

    async def get(self, call: Call, tenant: str, key_id: str) -> ApiKeyRow:
        call.principal.require("api_keys:read")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            return self._visible(call, await store.get_key(conn, tenant_id, key_id), key_id)

    async def list(
        self, call: Call, tenant: str, *, status: str | None, end_user_id: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[ApiKeyRow]:
        call.principal.require("api_keys:read")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            await self._tenant(conn, tenant_id, writing=False)
            return await store.list_keys(
                conn, tenant_id, status=status, end_user_id=end_user_id,
                children_only=call.principal.is_management_key, after=after, limit=limit,
            )  # fmt: skip

    # --- changes -----------------------------------------------------------------------

    async def create(self, call: Call, tenant: str, request: KeyRequest) -> tuple[ApiKeyRow, str]:
        """The new key and its secret (shown once; "" for a retried request)."""
        call.principal.require("api_keys:create")
        tenant_id = call.principal.tenant_scope(tenant)
        parent_id = request.parent_key_id.strip()
        if call.principal.is_management_key and parent_id in (call.principal.actor_id, ""):
            parent_id = ""  # its keys are its children anyway (_spec)
        elif call.principal.is_management_key:
            raise RelayError(ErrorKind.PERMISSION_DENIED, "A management key mints children of its own only.", param="parent_key_id")
        async with self._db.tenant_tx(tenant_id) as conn:
            await self._tenant(conn, tenant_id, writing=True)
            replay = await call.replay_of(conn, "api_key.created", tenant_id)
            if replay is not None and replay.resource_id:
                return self._visible(call, await store.get_key(conn, tenant_id, replay.resource_id), replay.resource_id), ""
            parent = await self._parent(conn, tenant_id, parent_id) if parent_id else None
            spec = self._spec(call, request, parent)
            minted = mint_key(spec.environment)
            row = await store.insert_key(
                conn, key_id=new_id("key"), tenant_id=tenant_id, spec=spec,
                key_hash=minted.key_hash, key_prefix=minted.key_prefix, key_hint=minted.key_hint,
            )  # fmt: skip
            await call.audit(conn, tenant_id, "api_key.created", resource_type="api_key", resource_id=row.id, metadata=_describe(row))
        return row, minted.secret

    async def update(self, call: Call, tenant: str, key_id: str, patch: KeyPatch) -> ApiKeyRow:
        call.principal.require("api_keys:update")
        tenant_id = call.principal.tenant_scope(tenant)
        unknown = patch.fields - PATCHABLE
        if unknown:
            raise RelayError(ErrorKind.BAD_REQUEST, f"These fields cannot be updated: {', '.join(sorted(unknown))}.", param="update_mask")
        changes = self._changes(patch)
        async with self._db.tenant_tx(tenant_id) as conn:
            await self._tenant(conn, tenant_id, writing=True)
            row = self._visible(call, await store.get_key(conn, tenant_id, key_id, lock=True), key_id)
            if row.status != "active":
                raise RelayError(ErrorKind.FAILED_PRECONDITION, f"The API key `{key_id}` is {row.status} and cannot be updated.", code="key_not_active")
            changed = {k: v for k, v in changes.items() if getattr(row, k) != _comparable(k, v)}
            if not changed:
                return row
            updated = await store.update_key(conn, tenant_id, key_id, changed)
            await call.audit(
                conn, tenant_id, "api_key.updated", resource_type="api_key", resource_id=key_id,
                metadata={"changed": sorted(changed), **_describe(updated)},
            )  # fmt: skip
            staged = await self._invalidator.stage(conn, tenant_id, key_tags([row.id], [row.key_hash]), [row.key_hash])
        await self._invalidator.keys_changed(tenant_id, [row.id], [row.key_hash], staged)
        return updated

    async def revoke(self, call: Call, tenant: str, key_id: str) -> ApiKeyRow:
        call.principal.require("api_keys:delete")
        tenant_id = call.principal.tenant_scope(tenant)
        async with self._db.tenant_tx(tenant_id) as conn:
            row = self._visible(call, await store.get_key(conn, tenant_id, key_id, lock=True), key_id)
            if row.status == "revoked" and row.grace_expires_at is None:
                return row  # already revoked: revoking again changes nothing
            revoked = await store.revoke_key(conn, tenant_id, key_id)
            await call.audit(conn, tenant_id, "api_key.revoked", resource_type="api_key", resource_id=key_id, metadata=_describe(revoked))
            staged = await self._invalidator.stage(conn, tenant_id, key_tags([row.id], [row.key_hash]), [row.key_hash])
        await self._invalidator.keys_changed(tenant_id, [row.id], [row.key_hash], staged)
        return revoked

    async def rotate(self, call: Call, tenant: str, key_id: str, grace_s: int) -> tuple[ApiKeyRow, str, ApiKeyRow]:
        """(successor, its secret — "" for a retried request, the old key with its grace end)."""
        call.principal.require("api_keys:update")
        tenant_id = call.principal.tenant_scope(tenant)
        grace = timedelta(seconds=rules.grace_seconds(grace_s, self._grace))
        async with self._db.tenant_tx(tenant_id) as conn:
            await self._tenant(conn, tenant_id, writing=True)
            old = self._visible(call, await store.get_key(conn, tenant_id, key_id, lock=True), key_id)
            replay = await call.replay_of(conn, "api_key.rotated", tenant_id)
            if replay is not None and old.rotated_to_id:
                return self._visible(call, await store.get_key(conn, tenant_id, old.rotated_to_id), old.rotated_to_id), "", old
            if old.status != "active":
                raise RelayError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"Only active keys can be rotated; `{key_id}` is {old.status}"
                    + (f" (rotated to `{old.rotated_to_id}`)." if old.rotated_to_id else "."),
                    code="key_not_active",
                )
            minted = mint_key(old.environment)
            successor = await store.insert_key(
                conn, key_id=new_id("key"), tenant_id=tenant_id, spec=old.as_new_key(),
                key_hash=minted.key_hash, key_prefix=minted.key_prefix, key_hint=minted.key_hint,
            )  # fmt: skip
            old = await store.mark_rotated(conn, tenant_id, key_id, successor.id, self._now() + grace)
            await call.audit(
                conn, tenant_id, "api_key.rotated", resource_type="api_key", resource_id=key_id,
                metadata={"new_key_id": successor.id, "grace_expires_at": old.grace_expires_at.isoformat() if old.grace_expires_at else None},
            )  # fmt: skip
            staged = await self._invalidator.stage(conn, tenant_id, key_tags([old.id], [old.key_hash]), [old.key_hash])
        await self._invalidator.keys_changed(tenant_id, [old.id], [old.key_hash], staged)
        return successor, minted.secret, old

    # --- rules -------------------------------------------------------------------------

    def _spec(self, call: Call, request: KeyRequest, parent_row: ApiKeyRow | None = None) -> NewKey:
        """The new key's row.  A child — minted by its management key, or by a person naming the
        parent — follows one rule either way: an inference key of the parent's environment."""
        principal = call.principal
        parent_environment = parent_row.environment if parent_row is not None else principal.environment
        environment = request.environment or parent_environment or "live"
        scope = request.scope or "inference"
        if environment not in rules.ENVIRONMENTS:
            raise RelayError(ErrorKind.BAD_REQUEST, "environment must be live or test.", param="api_key.environment")
        if scope not in rules.SCOPES:
            raise RelayError(ErrorKind.BAD_REQUEST, "scope must be inference or management.", param="api_key.scope")
        parent = created_by = created_by_key = None
        if principal.is_management_key or parent_row is not None:
            refuse = ErrorKind.PERMISSION_DENIED if parent_row is None else ErrorKind.BAD_REQUEST
            if scope != "inference":
                raise RelayError(refuse, "A management key can mint inference keys only.", param="api_key.scope")
            if environment != parent_environment:
                raise RelayError(
                    refuse,
                    f"A {parent_environment} management key can only mint {parent_environment} keys.",
                    param="api_key.environment",
                )
            parent = parent_row.id if parent_row is not None else principal.actor_id
        if principal.is_management_key:
            created_by_key = principal.actor_id
        elif principal.kind == "user":
            created_by = principal.actor_id
        cap, window = rules.spend_cap(request.spend_cap_amount, request.spend_cap_window)
        return NewKey(
            name=rules.name(request.name),
            environment=environment,
            scope=scope,
            parent_key_id=parent,
            end_user_id=rules.end_user_id(request.end_user_id),
            allowed_models=rules.allowed_models(request.allowed_models, self._model_exists),
            rate_limit_overrides=rules.rate_limits(request.rate_limits),
            spend_cap_micros=cap,
            spend_cap_window=window,
            expires_at=rules.expiry(request.expires_at, self._now()),
            created_by=created_by,
            created_by_key_id=created_by_key,
        )

    def _changes(self, patch: KeyPatch) -> dict[str, object]:
        changes: dict[str, object] = {}
        if "name" in patch.fields:
            changes["name"] = rules.name(patch.name)
        if "expire_time" in patch.fields:
            changes["expires_at"] = rules.expiry(patch.expires_at, self._now())
        if "allowed_models" in patch.fields:
            changes["allowed_models"] = rules.allowed_models(patch.allowed_models, self._model_exists)
        if "rate_limits" in patch.fields:
            changes["rate_limit_overrides"] = rules.rate_limits(patch.rate_limits)
        if "spend_cap" in patch.fields:
            changes["spend_cap_micros"], changes["spend_cap_window"] = rules.spend_cap(patch.spend_cap_amount, patch.spend_cap_window)
        return changes

    @staticmethod
    async def _parent(conn: Conn, tenant_id: str, key_id: str) -> ApiKeyRow:
        """The management key a person mints a child of: of this tenant, and active."""
        row = await store.get_key(conn, tenant_id, key_id)
        if row is None:
            raise RelayError(ErrorKind.NOT_FOUND, f"No API key `{key_id}` in this tenant.", param="parent_key_id")
        if row.scope != "management":
            raise RelayError(ErrorKind.BAD_REQUEST, f"`{key_id}` is not a management key: only those have child keys.", param="parent_key_id")
        if row.status != "active":
            raise RelayError(ErrorKind.FAILED_PRECONDITION, f"The API key `{key_id}` is {row.status}: it cannot get new child keys.",
                             code="key_not_active", param="parent_key_id")  # fmt: skip
        return row

    @staticmethod
    def _visible(call: Call, row: ApiKeyRow | None, key_id: str) -> ApiKeyRow:
        """The row if this principal may see it: management keys see child keys only."""
        if row is None or (call.principal.is_management_key and (not row.is_child or row.scope != "inference")):
            raise _not_found(key_id)
        return row

    @staticmethod
    async def _tenant(conn: Conn, tenant_id: str, *, writing: bool) -> None:
        """Check the tenant can have keys now."""
        row = await (await conn.execute("SELECT status FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
        if row is None or row["status"] == "deleted":
            raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
        if writing and row["status"] == "provisioning":
            # 503 + Retry-After, like an inference call of a provisioning tenant: it is a
            # matter of seconds, and nothing was done, so any client may simply retry.
            raise RelayError(
                ErrorKind.TENANT_PROVISIONING, "The tenant is still being provisioned; try again shortly.", retry_after_s=1
            )


def _comparable(column: str, value: object) -> object:
    return tuple(value) if column == "allowed_models" and value is not None else value  # type: ignore[arg-type]


def _describe(row: ApiKeyRow) -> dict[str, object]:
    """Audit metadata: what the key is and may do (never its hash)."""
    return {
        "name": row.name,
        "key_hint": row.key_hint,
        "environment": row.environment,
        "scope": row.scope,
        **({"end_user_id": row.end_user_id} if row.end_user_id else {}),
        **({"parent_key_id": row.parent_key_id} if row.parent_key_id else {}),
        **({"allowed_models": list(row.allowed_models)} if row.allowed_models else {}),
        **({"rate_limits": row.rate_limit_overrides} if row.rate_limit_overrides else {}),
        **({"spend_cap_micros": row.spend_cap_micros, "spend_cap_window": row.spend_cap_window} if row.spend_cap_micros is not None else {}),
        **({"expires_at": row.expires_at.isoformat()} if row.expires_at else {}),
    }
