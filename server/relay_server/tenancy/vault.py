"""Provider credential management: create, list, rotate, disable.

Who may do what:

* platform operators manage Relay's pooled keys (no tenant named) and may act
  on any tenant's BYOK keys (tenant named);
* a tenant principal (dashboard user) manages its own tenant's BYOK keys,
  with the ``credentials:*`` permissions of its role; creating one needs the
  tenant's ``byok`` feature.  Management keys hold no such permission.

A secret arrives once, is sealed (``crypto/envelope.py``) before it touches
a row, and is never returned, logged or audited — only its 4-character hint.
Every change writes its audit row in the same transaction, honours the
caller's ``request_id`` (a retry returns the first call's result), and then
drops the tenant's (or, for pooled keys, everyone's) cached credentials on
every worker (the invalidation bus, ``credentials`` scope) before returning.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay_server.address_policy import RefusedDestination, classify, parse_literal
from relay_server.crypto.envelope import RecordRef, seal
from relay_server.crypto.keyring import Keyring
from relay_server.domain.credentials import CredentialRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.storage.postgres import credentials as store
from relay_server.storage.postgres.credentials import NewCredential
from relay_server.storage.postgres.pool import Conn, Database
from relay_server.tenancy.calls import Call

MAX_SECRET = 4096
MAX_NAME = 100
MAX_URL = 2048
DEFAULT_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    provider_id: str
    name: str = ""
    base_url: str = ""
    rpm_limit: int = 0  # 0: no cap
    tpm_limit: int = 0
    priority: int = 0  # 0: the default


def _bad(message: str, param: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def _not_found(credential_id: str) -> RelayError:
    return RelayError(ErrorKind.NOT_FOUND, f"No provider credential `{credential_id}` here.", param="credential_id")


def check_secret(secret: str) -> str:
    if not secret:
        raise _bad("secret is required.", "secret")
    if len(secret) > MAX_SECRET:
        raise _bad(f"secret is longer than {MAX_SECRET} characters.", "secret")
    # It travels in an HTTP header: no whitespace or control characters.
    if not secret.isprintable() or any(ch.isspace() for ch in secret):
        raise _bad("secret must not contain whitespace or control characters.", "secret")
    return secret


def check_base_url(url: str, *, operator: bool) -> str | None:
    """An http(s) URL; tenants may only name public https endpoints.

    A tenant-chosen URL is fetched by Relay's servers, so loopback, private
    and link-local addresses are refused here (``relay_server.address_policy``);
    names are not resolved here but at every connection, where the provider
    client refuses what the policy refuses (see docs/providers.md).
    """
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("base_url must be an http(s) URL with a host.", "credential.base_url")
    if operator:
        return url
    host = parts.hostname.lower()
    if parts.scheme != "https" or host == "localhost" or host.endswith(".localhost"):
        raise _bad("base_url must be a public https URL.", "credential.base_url")
    # One address policy with webhooks: numeric forms that hide an address
    # (127.1, 0x7f000001, 2852039166) are refused, and an address literal must
    # be public.  A name is judged again when the provider client connects.
    try:
        address = parse_literal(host)
    except RefusedDestination:
        raise _bad("base_url must be a public https URL (write IP addresses in canonical form).", "credential.base_url") from None
    if address is not None and (classify(address) is not None or not address.is_global):
        raise _bad("base_url must be a public https URL.", "credential.base_url")
    return url


def _limit(value: int, param: str) -> int | None:
    if value < 0:
        raise _bad(f"{param} must not be negative.", param)
    return value or None


def _priority(value: int) -> int:
    if value < 0 or value > 1_000_000:
        raise _bad("priority must be between 0 and 1000000.", "credential.priority")
    return value or DEFAULT_PRIORITY


def _describe(row: CredentialRow) -> dict[str, Any]:
    """What the audit log keeps: never the secret."""
    return {"provider_id": row.provider_id, "name": row.name, "key_hint": row.key_hint, "status": row.status}


class CredentialVault:
    def __init__(
        self,
        db: Database,
        keyring: Keyring | None,
        *,
        on_change: Callable[[str | None], object] | None = None,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._on_change = on_change

    def _owner(self, call: Call, tenant: str) -> str | None:
        """None: Relay's pooled keys (operators only); else the tenant acted on."""
        if call.principal.is_platform and not tenant.strip():
            return None
        return call.principal.tenant_scope(tenant)

    @asynccontextmanager
    async def _tx(self, owner: str | None) -> AsyncIterator[Conn]:
        if owner is None:
            async with self._db.system_tx() as conn:
                yield conn
            return
        async with self._db.tenant_tx(owner) as conn:
            row = await (await conn.execute("SELECT status FROM tenants WHERE id = %s", (owner,))).fetchone()
            if row is None or row["status"] == "deleted":
                raise RelayError(ErrorKind.NOT_FOUND, f"No tenant `{owner}`.", param="tenant_id")
            yield conn

    def _sealing_keyring(self) -> Keyring:
        if self._keyring is None:
            raise RelayError(
                ErrorKind.FAILED_PRECONDITION,
                "This server has no master key (RELAY_MASTER_KEY), so it cannot store provider credentials.",
            )
        return self._keyring

    async def _changed(self, owner: str | None) -> None:
        if self._on_change is not None:
            result = self._on_change(owner)
            if inspect.isawaitable(result):  # the invalidation bus: every worker, before the call returns
                await result

    async def create(self, call: Call, tenant: str, spec: CredentialSpec, secret: str) -> CredentialRow:
        call.principal.require("credentials:create")
        owner = self._owner(call, tenant)
        keyring = self._sealing_keyring()
        check_secret(secret)
        if not spec.provider_id:
            raise _bad("credential.provider_id is required.", "credential.provider_id")
        name = spec.name.strip() or "default"
        if len(name) > MAX_NAME:
            raise _bad(f"credential.name is longer than {MAX_NAME} characters.", "credential.name")
        base_url = check_base_url(spec.base_url, operator=call.principal.is_platform)
        rpm, tpm = _limit(spec.rpm_limit, "credential.rpm_limit"), _limit(spec.tpm_limit, "credential.tpm_limit")
        priority = _priority(spec.priority)
        async with self._tx(owner) as conn:
            replay = await call.replay_of(conn, "provider_credential.created", owner)
            if replay is not None and replay.resource_id:
                row = await store.get(conn, replay.resource_id, owner)
                if row is not None:
                    return row
            if not await store.provider_exists(conn, spec.provider_id):
                raise _bad(f"Unknown provider `{spec.provider_id}`.", "credential.provider_id")
            if owner is not None and not call.principal.is_platform and not await store.byok_enabled(conn, owner):
                raise RelayError(
                    ErrorKind.PERMISSION_DENIED,
                    "Bring-your-own provider keys are not enabled for this tenant's plan.",
                    code="feature_not_enabled",
                )
            credential_id = new_id("pcred")
            sealed = seal(keyring, secret, RecordRef(credential_id, owner, spec.provider_id))
            row = await store.insert(
                conn,
                NewCredential(credential_id, owner, spec.provider_id, name, secret[-4:], base_url, rpm, tpm, priority, sealed),
            )
            await call.audit(
                conn, owner, "provider_credential.created",
                resource_type="provider_credential", resource_id=row.id, metadata=_describe(row),
            )  # fmt: skip
        await self._changed(owner)
        return row

    async def list(
        self, call: Call, tenant: str, *, provider_id: str | None, after_id: str | None, limit: int
    ) -> list[CredentialRow]:
        call.principal.require("credentials:read")
        owner = self._owner(call, tenant)
        async with self._tx(owner) as conn:
            return await store.list_page(conn, owner, after_id=after_id, limit=limit, provider_id=provider_id)

    async def rotate(self, call: Call, tenant: str, credential_id: str, secret: str) -> CredentialRow:
        call.principal.require("credentials:update")
        owner = self._owner(call, tenant)
        keyring = self._sealing_keyring()
        check_secret(secret)
        async with self._tx(owner) as conn:
            replay = await call.replay_of(conn, "provider_credential.rotated", owner)
            current = await store.get(conn, credential_id, owner, for_update=True)
            if current is None:
                raise _not_found(credential_id)
            if replay is not None and replay.resource_id == credential_id:
                return current
            sealed = seal(keyring, secret, RecordRef(current.id, owner, current.provider_id))
            row = await store.replace_secret(conn, current.id, sealed, secret[-4:])
            await call.audit(
                conn, owner, "provider_credential.rotated",
                resource_type="provider_credential", resource_id=row.id,
                metadata={**_describe(row), "previous_key_hint": current.key_hint},
            )  # fmt: skip
        await self._changed(owner)
        return row

    async def disable(self, call: Call, tenant: str, credential_id: str) -> CredentialRow:
        call.principal.require("credentials:delete")
        owner = self._owner(call, tenant)
        async with self._tx(owner) as conn:
            current = await store.get(conn, credential_id, owner, for_update=True)
            if current is None:
                raise _not_found(credential_id)
            if current.status == "disabled":
                return current  # already done: nothing changes, nothing to audit
            row = await store.set_status(conn, current.id, "disabled")
            await call.audit(
                conn, owner, "provider_credential.disabled",
                resource_type="provider_credential", resource_id=row.id, metadata=_describe(row),
            )  # fmt: skip
        await self._changed(owner)
        return row
