"""How the console calls Relay: the generated Python SDK over gRPC, as the signed-in person.

A member's calls carry a short-lived HS256 dashboard JWT minted for this
request from the session's membership, so the server's RBAC (token
permissions intersected with the database's) decides every call.  An
operator's calls carry the platform admin token, which only this process
holds (operators sign in with their own password and never see it), plus
``x-relay-acting-operator`` with the operator's email, so the audit log
names the person, not the token.  The console's own platform-side calls
(memberships, sign-in and password-change records) are made for nobody in
particular and carry the token alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from relay_proto.relay.admin.v1 import tenants_pb2
from relay_sdk import AsyncRelay
from relay_sdk import RelayError as ApiError
from relay_server.dashboard.accounts import Membership
from relay_server.tenancy import tokens
from relay_server.tenancy.rbac import ACTING_OPERATOR_HEADER

JWT_TTL_S = 300
log = logging.getLogger("relay.dashboard")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    grpc_target: str
    jwt_secret: str
    jwt_issuer: str
    admin_token: str


class RelayApi:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.client = AsyncRelay(config.grpc_target, timeout=10.0, max_retries=0)

    def member_auth(self, membership: Membership) -> dict[str, str]:
        token = tokens.issue(
            self.config.jwt_secret,
            issuer=self.config.jwt_issuer,
            user_id=membership.user_id,
            tenant_id=membership.tenant_id,
            tenant_slug=membership.tenant_slug,
            role=membership.role,
            permissions=membership.permissions,
            ttl_s=JWT_TTL_S,
        )
        return {"authorization": f"Bearer {token}"}

    def operator_auth(self, acting: str | None = None) -> dict[str, str]:
        """The admin token; with ``acting``, the operator (console account email) the call is made for."""
        auth = {"authorization": f"Bearer {self.config.admin_token}"}
        if acting:
            auth[ACTING_OPERATOR_HEADER] = acting
        return auth

    async def memberships(self, email: str) -> list[Membership]:
        """The tenants this email is an active member of, with its role's permissions now."""
        reply = await self.client.tenants.list_account_memberships(email=email, extra_metadata=self.operator_auth())
        return [
            Membership(
                m.user_id, m.tenant_id, m.tenant_slug, m.tenant_name,
                tenants_pb2.TenantStatus.Name(m.tenant_status).removeprefix("TENANT_STATUS_").lower(),
                m.role, frozenset(m.permissions),
            )
            for m in reply.memberships
        ]

    async def record_sign_in(self, email: str, outcome: str, ip_address: str) -> None:
        """Audit a sign-in attempt.  A failure to record is logged, never shown: the person's
        sign-in does not depend on the audit call, but an operator can see it went missing."""
        try:
            await self.client.tenants.record_sign_in(
                email=email, outcome=outcome, ip_address=ip_address, extra_metadata=self.operator_auth()
            )
        except ApiError as exc:
            log.warning("could not audit a %s sign-in: %s", outcome, exc.message)

    async def record_password_change(self, email: str, change: str, ip_address: str) -> None:
        """Audit a password set (``set``: an invitation) or reset (``reset``); like sign-ins, a failure
        to record is logged and does not undo the change."""
        try:
            await self.client.tenants.record_password_change(
                email=email, change=change, ip_address=ip_address, extra_metadata=self.operator_auth()
            )
        except ApiError as exc:
            log.warning("could not audit a password %s: %s", change, exc.message)

    async def close(self) -> None:
        await self.client.close()


def api_error_message(exc: ApiError) -> str:
    """The server's own message for a refused call (it is written for people)."""
    return exc.message or "The request failed."


def api_error_status(exc: ApiError) -> int:
    """The page's status: the API's 4xx as is; anything else is a bad gateway from the page's view."""
    status = exc.http_status or 0
    return status if 400 <= status < 500 else 502
