"""Who may call the control plane, and as whom.

Three kinds of caller, told apart by the bearer token:

* the platform operator token (``admin_token``): every tenant; with an
  ``x-relay-acting-operator`` value (the web console's operator account, an
  email) its calls are audited as that operator instead of the bare token.
  The value is trusted only alongside the admin token, whose holder may act
  as any operator anyway; with any other credential it is refused (403), so
  a forged one can never dress a tenant's call up as an operator's;
* a management API key (``rly_…``, scope ``management``): child keys of its
  own tenant, nothing else; an inference key is refused here;
* a dashboard JWT (HS256, ``jwt_secret``): a user of one tenant, with the
  permissions of its role.  The token's permissions are intersected with
  what the database says the user holds *now*, so a removed member or a
  demoted role stops working at once, not when the token expires.

Comparisons of secrets are constant-time; secrets are never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.steps.authenticate import Authenticator, bearer_token
from relay_server.tenancy import tokens
from relay_server.tenancy.rbac import ACTING_OPERATOR_HEADER, MANAGEMENT_KEY_PERMISSIONS, PLATFORM, AdminPrincipal
from relay_server.tenancy.tenants import EMAIL_PATTERN

__all__ = ["AdminAuthenticator", "AdminPrincipal"]


class PermissionSource(Protocol):
    """What an active dashboard user may do now (``tenancy.members.MemberPermissions``)."""

    async def current(self, tenant_id: str, user_id: str) -> frozenset[str] | None: ...


class AdminAuthenticator:
    def __init__(
        self,
        admin_token: str,
        *,
        keys: Authenticator | None = None,
        members: PermissionSource | None = None,
        jwt_secret: str = "",
        jwt_issuer: str = "relay",
        trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    ) -> None:
        self._token = admin_token.encode()
        # The Envoy hop(s) whose x-forwarded-for names the caller (api/admin_support.client_ip).
        self.trusted_proxies = trusted_proxies
        self._keys = keys
        self._members = members
        self._jwt_secret = jwt_secret
        self._jwt_issuer = jwt_issuer

    def _is_operator(self, token: str) -> bool:
        # An unset admin token disables operator access instead of accepting "".
        return bool(self._token) and hmac.compare_digest(token.encode(), self._token)

    def _platform(self, metadata: Mapping[str, str]) -> AdminPrincipal:
        """The platform principal, as the acting console operator when the call names one."""
        acting = metadata.get(ACTING_OPERATOR_HEADER, "").strip().lower()
        if not acting:
            return PLATFORM
        if len(acting) > 320 or not EMAIL_PATTERN.match(acting):
            raise RelayError(ErrorKind.BAD_REQUEST, f"{ACTING_OPERATOR_HEADER} must be an operator's email.")
        return replace(PLATFORM, actor_id=acting)

    def _refuse_acting_operator(self, metadata: Mapping[str, str]) -> None:
        if ACTING_OPERATOR_HEADER in metadata:
            raise RelayError(
                ErrorKind.PERMISSION_DENIED, f"{ACTING_OPERATOR_HEADER} is accepted only with the platform admin token."
            )

    def authenticate(self, metadata: Mapping[str, str]) -> AdminPrincipal:
        """Platform operators only (the catalog and other operator-only services)."""
        if self._is_operator(bearer_token(metadata)):
            return self._platform(metadata)
        raise RelayError(ErrorKind.INVALID_API_KEY, "The admin credential is not valid.")

    async def resolve(self, metadata: Mapping[str, str]) -> AdminPrincipal:
        """Any admin principal: operator, management key or dashboard user."""
        token = bearer_token(metadata)
        if self._is_operator(token):
            return self._platform(metadata)
        self._refuse_acting_operator(metadata)
        if token.startswith("rly_") and self._keys is not None:
            principal = await self._keys.authenticate(metadata)
            if principal.scope != "management":
                raise RelayError(
                    ErrorKind.PERMISSION_DENIED, "An inference key cannot call the admin API; use a management key."
                )
            return AdminPrincipal(
                kind="api_key",
                actor_id=principal.key_id,
                tenant_id=principal.tenant_id,
                permissions=MANAGEMENT_KEY_PERMISSIONS,
                environment=principal.environment,
            )
        if token.count(".") == 2 and self._members is not None:
            claims = tokens.verify(self._jwt_secret, self._jwt_issuer, token)
            current = await self._current_permissions(claims.tenant_id, claims.user_id)
            return AdminPrincipal(
                kind="user",
                actor_id=claims.user_id,
                tenant_id=claims.tenant_id,
                permissions=claims.permissions & current,
                role=claims.role,
            )
        raise RelayError(ErrorKind.INVALID_API_KEY, "The admin credential is not valid.")

    async def _current_permissions(self, tenant_id: str, user_id: str) -> frozenset[str]:
        assert self._members is not None
        held = await self._members.current(tenant_id, user_id)
        if held is None:
            raise RelayError(
                ErrorKind.INVALID_API_KEY, "The dashboard token's user is no longer an active member of its tenant.",
                code="invalid_token",
            )
        return held
