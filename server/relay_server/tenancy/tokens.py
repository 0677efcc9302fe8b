"""Dashboard tokens: HS256 JWTs with the claims of the spec.

    {"iss", "sub": usr_…, "tenant_id", "tenant_slug", "role", "permissions", "iat", "exp"}

``verify`` turns every way a token can be wrong into a precise 401 (expired,
bad signature, wrong issuer, missing claim); the caller then checks the user
against the database, so a removed member's unexpired token stops working.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from relay_server.errors import ErrorKind, RelayError

ALGORITHM = "HS256"
_REQUIRED = ["iss", "sub", "tenant_id", "role", "permissions", "iat", "exp"]


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: str
    tenant_id: str
    tenant_slug: str
    role: str
    permissions: frozenset[str]


def issue(
    secret: str,
    *,
    issuer: str,
    user_id: str,
    tenant_id: str,
    tenant_slug: str,
    role: str,
    permissions: Iterable[str],
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    if not secret:
        raise ValueError("a JWT secret is required to issue dashboard tokens")
    iat = int(now if now is not None else time.time())
    claims = {
        "iss": issuer,
        "sub": user_id,
        "tenant_id": tenant_id,
        "tenant_slug": tenant_slug,
        "role": role,
        "permissions": sorted(permissions),
        "iat": iat,
        "exp": iat + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _invalid(message: str, code: str = "invalid_token") -> RelayError:
    return RelayError(ErrorKind.INVALID_API_KEY, message, code=code)


def verify(secret: str, issuer: str, token: str, *, leeway_s: int = 0) -> TokenClaims:
    if not secret:
        raise _invalid("Dashboard tokens are not enabled on this server.")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=issuer, leeway=leeway_s, options={"require": _REQUIRED}
        )
    except jwt.ExpiredSignatureError:
        raise _invalid("The dashboard token has expired; sign in again.", "token_expired") from None
    except jwt.InvalidSignatureError:
        raise _invalid("The dashboard token's signature does not verify.") from None
    except jwt.InvalidIssuerError:
        raise _invalid("The dashboard token was not issued by this Relay.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid(f"The dashboard token lacks the `{exc.claim}` claim.") from None
    except jwt.InvalidTokenError:
        raise _invalid("The dashboard token is malformed.") from None
    permissions = claims["permissions"]
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise _invalid("The dashboard token's `permissions` claim must be a list of strings.")
    for name in ("sub", "tenant_id", "role"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise _invalid(f"The dashboard token's `{name}` claim must be a non-empty string.")
    return TokenClaims(
        user_id=claims["sub"],
        tenant_id=claims["tenant_id"],
        tenant_slug=str(claims.get("tenant_slug", "")),
        role=claims["role"],
        permissions=frozenset(permissions),
    )
