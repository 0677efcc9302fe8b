"""The console's accounts, sessions and one-time links (tables of migration 0023).

These are the console's own tables and the only ones it touches directly:
which tenants an email belongs to, and with what permissions, comes from the
admin API (``ListAccountMemberships``), passed in as ``memberships``.

Secrets (session cookies, invitation and reset tokens) are random 32-byte
values; only their SHA-256 is stored, so a database dump signs nobody in.
Repeated wrong passwords lock the account for a while (``LOCK_AFTER``,
``LOCK_FOR``); a correct password during the lock is refused too.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from relay_server.dashboard.passwords import DUMMY_HASH, hash_password, verify_password

LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=12)
INVITATION_TTL = timedelta(days=7)
RESET_TTL = timedelta(hours=1)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Membership:
    user_id: str
    tenant_id: str
    tenant_slug: str
    tenant_name: str
    tenant_status: str
    role: str
    permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Session:
    email: str
    is_operator: bool
    csrf_token: str
    membership: Membership | None


class SignInRefused(Exception):
    """Wrong email or password, or a locked account (the message says which may be told)."""


MembershipLookup = Callable[[str], Awaitable[list[Membership]]]


async def _no_memberships(email: str) -> list[Membership]:
    return []


class Accounts:
    def __init__(self, pool: AsyncConnectionPool[Any], memberships: MembershipLookup = _no_memberships) -> None:
        self._pool = pool
        self.memberships = memberships

    # --- accounts -----------------------------------------------------------------------------
    async def set_password(self, email: str, password: str, *, is_operator: bool | None = None) -> None:
        # scrypt takes ~50 ms of CPU: off the event loop.
        hashed = await asyncio.to_thread(hash_password, password)
        async with self._pool.connection() as conn:
            await conn.execute(
                """INSERT INTO dashboard_accounts (email, password_hash, is_operator)
                   VALUES (%s, %s, %s)
                   ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash,
                       is_operator = CASE WHEN %s::boolean IS NULL THEN dashboard_accounts.is_operator
                                          ELSE %s::boolean END,
                       failed_attempts = 0, locked_until = NULL, updated_at = now()""",
                (email.lower(), hashed, bool(is_operator), is_operator, is_operator),
            )
            # A new password ends every session signed in with the old one.
            await conn.execute("DELETE FROM dashboard_sessions WHERE email = %s", (email.lower(),))

    async def check_password(self, email: str, password: str) -> bool:
        """True on the right password; counts failures and locks.  Raises SignInRefused when locked."""
        email = email.strip().lower()
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT password_hash, locked_until > now() AS locked FROM dashboard_accounts WHERE email = %s",
                (email,),
            )).fetchone()
        if row is None:
            await asyncio.to_thread(verify_password, password, DUMMY_HASH)
            return False
        if row["locked"]:
            raise SignInRefused("Too many failed sign-ins: this account is locked for a while. Try again later.")
        if await asyncio.to_thread(verify_password, password, row["password_hash"]):
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE dashboard_accounts SET failed_attempts = 0, locked_until = NULL WHERE email = %s", (email,)
                )
            return True
        async with self._pool.connection() as conn:
            await conn.execute(
                """UPDATE dashboard_accounts
                      SET failed_attempts = failed_attempts + 1,
                          locked_until = CASE WHEN failed_attempts + 1 >= %s THEN now() + %s ELSE locked_until END
                    WHERE email = %s""",
                (LOCK_AFTER, LOCK_FOR, email),
            )
        return False

    async def is_operator(self, email: str) -> bool:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT is_operator FROM dashboard_accounts WHERE email = %s", (email.lower(),)
            )).fetchone()
        return bool(row and row["is_operator"])

    # --- sessions -----------------------------------------------------------------------------
    async def open_session(self, email: str, user_id: str | None) -> tuple[str, str]:
        """A new session; returns (cookie value, CSRF token)."""
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        async with self._pool.connection() as conn:
            await conn.execute(
                """INSERT INTO dashboard_sessions (id_hash, email, user_id, csrf_token, expires_at)
                   VALUES (%s, %s, %s, %s, now() + %s)""",
                (_digest(secret), email.lower(), user_id, csrf, SESSION_TTL),
            )
        return secret, csrf

    async def session(self, secret: str) -> Session | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                """SELECT s.email, s.user_id, s.csrf_token, a.is_operator FROM dashboard_sessions s
                     JOIN dashboard_accounts a ON a.email = s.email
                    WHERE s.id_hash = %s AND s.expires_at > now()""",
                (_digest(secret),),
            )).fetchone()
        if row is None:
            return None
        membership = None
        if row["user_id"]:
            found = [m for m in await self.memberships(row["email"]) if m.user_id == row["user_id"]]
            if not found:
                return None  # removed from the tenant: the session ends with the membership
            membership = found[0]
        return Session(row["email"], row["is_operator"], row["csrf_token"], membership)

    async def close_session(self, secret: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM dashboard_sessions WHERE id_hash = %s", (_digest(secret),))

    # --- one-time links -----------------------------------------------------------------------
    async def issue_token(self, kind: str, email: str) -> str:
        ttl = INVITATION_TTL if kind == "invitation" else RESET_TTL
        secret = secrets.token_urlsafe(32)
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO dashboard_tokens (token_hash, kind, email, expires_at) VALUES (%s, %s, %s, now() + %s)",
                (_digest(secret), kind, email.lower(), ttl),
            )
        return secret

    async def token_email(self, kind: str, secret: str) -> str | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                """SELECT email FROM dashboard_tokens
                    WHERE token_hash = %s AND kind = %s AND used_at IS NULL AND expires_at > now()""",
                (_digest(secret), kind),
            )).fetchone()
        return row["email"] if row else None

    async def redeem_token(self, kind: str, secret: str, password: str) -> str | None:
        """Use a link once: set the password of its email; returns the email, or None if not valid."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                """UPDATE dashboard_tokens SET used_at = now()
                    WHERE token_hash = %s AND kind = %s AND used_at IS NULL AND expires_at > now()
                RETURNING email""",
                (_digest(secret), kind),
            )).fetchone()
        if row is None:
            return None
        await self.set_password(row["email"], password)
        return str(row["email"])

    async def account_exists(self, email: str) -> bool:
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT 1 FROM dashboard_accounts WHERE email = %s", (email.lower(),))).fetchone()
        return row is not None


async def open_pool(dsn: str) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True, "row_factory": dict_row}
    )
    await pool.open(wait=True, timeout=30)
    return pool
