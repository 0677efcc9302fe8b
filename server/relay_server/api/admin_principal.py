"""Who may call the control plane.

Platform operators present the admin token from settings.  (Dashboard JWTs and
management keys join here when the tenancy capability lands.)
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.authenticate import bearer_token


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    kind: str  # platform_admin
    actor_id: str


class AdminAuthenticator:
    def __init__(self, admin_token: str) -> None:
        self._token = admin_token.encode()

    def authenticate(self, metadata: Mapping[str, str]) -> AdminPrincipal:
        token = bearer_token(metadata).encode()
        # An unset admin token disables operator access instead of accepting "".
        if self._token and hmac.compare_digest(token, self._token):
            return AdminPrincipal(kind="platform_admin", actor_id="platform_admin")
        raise RelayError(ErrorKind.INVALID_API_KEY, "The admin credential is not valid.")
