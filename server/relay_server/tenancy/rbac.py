"""Who may do what: the permission vocabulary, the system roles, and the
principal every admin call runs as.

Permissions are ``resource:action`` (seeded by migration 0012).  The tenant a
call acts on comes from its principal — only platform operators name another
tenant — so a dashboard user or a management key cannot reach another
tenant's rows however the request is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay_server.errors import ErrorKind, RelayError

RESOURCES = ("api_keys", "usage", "billing", "members", "settings", "roles", "credentials", "audit_log", "threads")
ACTIONS = ("create", "read", "update", "delete")
ALL_PERMISSIONS = frozenset(f"{r}:{a}" for r in RESOURCES for a in ACTIONS)


def _perms(spec: dict[str, str]) -> frozenset[str]:
    """{"api_keys": "crud", "usage": "r"} → {"api_keys:create", ..., "usage:read"}."""
    letters = {"c": "create", "r": "read", "u": "update", "d": "delete"}
    return frozenset(f"{resource}:{letters[ch]}" for resource, actions in spec.items() for ch in actions)


# The roles provisioning seeds into every tenant.  An admin runs the tenant
# but cannot delete it or its billing; a developer works with keys and
# usage; a viewer reads (but not provider credentials).
SYSTEM_ROLES: dict[str, frozenset[str]] = {
    "owner": ALL_PERMISSIONS,
    "admin": ALL_PERMISSIONS - {"settings:delete", "billing:delete"},
    "developer": _perms(
        {"api_keys": "crud", "usage": "r", "threads": "crud", "credentials": "r", "settings": "r", "members": "r"}
    ),
    "viewer": _perms({r: "r" for r in RESOURCES if r != "credentials"}),
}

# What a management key may do: its tenant's child keys, nothing else.
MANAGEMENT_KEY_PERMISSIONS = _perms({"api_keys": "crud"})


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """The authenticated caller of an admin RPC."""

    kind: str  # platform_admin | user | api_key
    actor_id: str  # platform_admin, usr_…, key_…
    tenant_id: str | None = None  # None only for platform operators
    permissions: frozenset[str] = field(default_factory=frozenset)
    role: str | None = None  # users: their role
    environment: str | None = None  # management keys: live | test

    @property
    def is_platform(self) -> bool:
        return self.kind == "platform_admin"

    @property
    def is_management_key(self) -> bool:
        return self.kind == "api_key"

    def tenant_scope(self, requested: str) -> str:
        """The tenant this call acts on.

        Platform operators must name one.  Everyone else acts on their own
        tenant; naming another is refused (not silently ignored).
        """
        requested = requested.strip()
        if self.is_platform:
            if not requested:
                raise RelayError(ErrorKind.BAD_REQUEST, "tenant_id is required for platform operators.", param="tenant_id")
            return requested
        assert self.tenant_id is not None
        if requested and requested != self.tenant_id:
            raise RelayError(ErrorKind.PERMISSION_DENIED, "You do not have access to this tenant.", param="tenant_id")
        return self.tenant_id

    def require(self, permission: str) -> None:
        if self.is_platform or permission in self.permissions:
            return
        raise RelayError(
            ErrorKind.PERMISSION_DENIED,
            f"This action needs the `{permission}` permission, which your credential does not have.",
        )

    def require_platform(self, what: str) -> None:
        if not self.is_platform:
            raise RelayError(ErrorKind.PERMISSION_DENIED, f"Only platform operators may {what}.")


PLATFORM = AdminPrincipal(kind="platform_admin", actor_id="platform_admin", permissions=ALL_PERMISSIONS)

# The web console's operator calls carry the platform admin token plus this metadata: the email
# of the console account acting, which the audit log records as the actor.  Trusted only
# alongside the admin token (api/admin_principal.py); refused with any other credential.
ACTING_OPERATOR_HEADER = "x-relay-acting-operator"
