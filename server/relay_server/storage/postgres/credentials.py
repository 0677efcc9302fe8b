"""Provider credential rows: Relay-owned (``tenant_id`` NULL) and BYOK.

Every function takes the caller's connection, so a change and its audit row
share one transaction.  Tenant principals run inside ``tenant_tx`` (row-level
security lets a tenant write only its own rows); platform operators and the
rotation job use ``system_tx``.  The explicit ``tenant_id`` filters are a
second fence, not the only one.

Rows hold ciphertext only (``crypto/envelope.py``); nothing here sees a
plaintext secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay_server.crypto.envelope import RecordRef, Sealed
from relay_server.domain.credentials import CredentialRow
from relay_server.storage.postgres.pool import Conn, Database

_PUBLIC = (
    "id, tenant_id, provider_id, name, key_hint, base_url, status, rpm_limit, tpm_limit, priority, "
    "last_rotated_at, created_at"
)
_SEALED = "key_encrypted, key_nonce, dek_wrapped, master_key_id"


@dataclass(frozen=True, slots=True)
class RoutableCredential:
    """An active credential as the router needs it: limits plus ciphertext."""

    id: str
    tenant_id: str | None
    provider_id: str
    base_url: str | None
    rpm_limit: int | None
    tpm_limit: int | None
    priority: int
    sealed: Sealed

    @property
    def byok(self) -> bool:
        return self.tenant_id is not None

    @property
    def ref(self) -> RecordRef:
        return RecordRef(self.id, self.tenant_id, self.provider_id)

    def __repr__(self) -> str:
        return f"RoutableCredential({self.id!r}, provider={self.provider_id!r}, byok={self.byok})"


@dataclass(frozen=True, slots=True)
class NewCredential:
    id: str
    tenant_id: str | None
    provider_id: str
    name: str
    key_hint: str
    base_url: str | None
    rpm_limit: int | None
    tpm_limit: int | None
    priority: int
    sealed: Sealed


def _row(row: dict[str, Any]) -> CredentialRow:
    return CredentialRow(**{k: row[k] for k in CredentialRow.__slots__})


def _sealed(row: dict[str, Any]) -> Sealed:
    return Sealed(bytes(row["key_encrypted"]), bytes(row["key_nonce"]), bytes(row["dek_wrapped"]), row["master_key_id"])


async def insert(conn: Conn, new: NewCredential) -> CredentialRow:
    cur = await conn.execute(
        f"""INSERT INTO provider_credentials
               (id, tenant_id, provider_id, name, key_hint, base_url, rpm_limit, tpm_limit, priority, {_SEALED})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING {_PUBLIC}""",
        (
            new.id, new.tenant_id, new.provider_id, new.name, new.key_hint, new.base_url,
            new.rpm_limit, new.tpm_limit, new.priority,
            new.sealed.key_encrypted, new.sealed.key_nonce, new.sealed.dek_wrapped, new.sealed.master_key_id,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return _row(row)


def _owner_filter(tenant_id: str | None) -> tuple[str, list[Any]]:
    if tenant_id is None:
        return "tenant_id IS NULL", []
    return "tenant_id = %s", [tenant_id]


async def get(conn: Conn, credential_id: str, tenant_id: str | None, *, for_update: bool = False) -> CredentialRow | None:
    """One credential of one owner (``tenant_id`` None = Relay-owned)."""
    where, params = _owner_filter(tenant_id)
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(
        f"SELECT {_PUBLIC} FROM provider_credentials WHERE id = %s AND {where}{lock}", (credential_id, *params)
    )
    row = await cur.fetchone()
    return _row(row) if row else None


async def list_page(
    conn: Conn, tenant_id: str | None, *, after_id: str | None, limit: int, provider_id: str | None = None
) -> list[CredentialRow]:
    """One owner's credentials in id order (keyset pagination on ``id``)."""
    where, params = _owner_filter(tenant_id)
    clauses = [where]
    if provider_id:
        clauses.append("provider_id = %s")
        params.append(provider_id)
    if after_id:
        clauses.append("id > %s")
        params.append(after_id)
    cur = await conn.execute(
        f"SELECT {_PUBLIC} FROM provider_credentials WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s",
        (*params, limit),
    )
    return [_row(r) for r in await cur.fetchall()]


async def replace_secret(conn: Conn, credential_id: str, sealed: Sealed, key_hint: str) -> CredentialRow:
    cur = await conn.execute(
        f"""UPDATE provider_credentials
               SET key_encrypted = %s, key_nonce = %s, dek_wrapped = %s, master_key_id = %s,
                   key_hint = %s, last_rotated_at = now()
             WHERE id = %s
            RETURNING {_PUBLIC}""",
        (sealed.key_encrypted, sealed.key_nonce, sealed.dek_wrapped, sealed.master_key_id, key_hint, credential_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return _row(row)


async def set_status(conn: Conn, credential_id: str, status: str) -> CredentialRow:
    cur = await conn.execute(
        f"UPDATE provider_credentials SET status = %s WHERE id = %s RETURNING {_PUBLIC}", (status, credential_id)
    )
    row = await cur.fetchone()
    assert row is not None
    return _row(row)


async def provider_exists(conn: Conn, provider_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM providers WHERE id = %s AND api <> 'test'", (provider_id,))
    return await cur.fetchone() is not None


async def byok_enabled(conn: Conn, tenant_id: str) -> bool:
    """The tenant's ``byok`` feature: an unexpired override, else its plan's default."""
    cur = await conn.execute(
        """SELECT COALESCE(
                  (SELECT enabled FROM tenant_feature_overrides
                    WHERE tenant_id = %s AND feature = 'byok' AND (expires_at IS NULL OR expires_at > now())),
                  (SELECT pf.enabled FROM plan_features pf JOIN tenants t ON t.plan = pf.plan
                    WHERE t.id = %s AND pf.feature = 'byok'),
                  false) AS enabled""",
        (tenant_id, tenant_id),
    )
    row = await cur.fetchone()
    return bool(row and row["enabled"])


# -- the router's read ------------------------------------------------------

_ROUTABLE = f"SELECT id, tenant_id, provider_id, base_url, rpm_limit, tpm_limit, priority, {_SEALED} FROM provider_credentials"


def _routable(row: dict[str, Any]) -> RoutableCredential:
    return RoutableCredential(
        id=row["id"],
        tenant_id=row["tenant_id"],
        provider_id=row["provider_id"],
        base_url=row["base_url"],
        rpm_limit=row["rpm_limit"],
        tpm_limit=row["tpm_limit"],
        priority=row["priority"],
        sealed=_sealed(row),
    )


async def routable_for_tenant(conn: Conn, tenant_id: str) -> list[RoutableCredential]:
    """Relay's pooled keys plus the tenant's own, active only (run in ``tenant_tx``)."""
    cur = await conn.execute(
        _ROUTABLE + " WHERE status = 'active' AND (tenant_id IS NULL OR tenant_id = %s) ORDER BY priority, id",
        (tenant_id,),
    )
    return [_routable(r) for r in await cur.fetchall()]


async def pooled(conn: Conn) -> list[RoutableCredential]:
    """Relay's active pooled keys (health probes)."""
    cur = await conn.execute(_ROUTABLE + " WHERE status = 'active' AND tenant_id IS NULL ORDER BY priority, id")
    return [_routable(r) for r in await cur.fetchall()]


class PostgresCredentialSource:
    """The router's and the health monitor's reads, each in its own transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def routable(self, tenant_id: str) -> list[RoutableCredential]:
        async with self._db.tenant_tx(tenant_id) as conn:
            return await routable_for_tenant(conn, tenant_id)

    async def pooled(self) -> list[RoutableCredential]:
        async with self._db.system_tx() as conn:
            return await pooled(conn)


# -- master-key rotation (system_tx only) -------------------------------------


@dataclass(frozen=True, slots=True)
class WrappedKey:
    id: str
    dek_wrapped: bytes
    master_key_id: str


async def wrapped_batch(conn: Conn, master_key_id: str, after_id: str | None, limit: int) -> list[WrappedKey]:
    """The next rows still wrapped by ``master_key_id``, locked until the transaction ends."""
    cur = await conn.execute(
        """SELECT id, dek_wrapped, master_key_id FROM provider_credentials
            WHERE master_key_id = %s AND id > %s
            ORDER BY id LIMIT %s FOR UPDATE""",
        (master_key_id, after_id or "", limit),
    )
    return [WrappedKey(r["id"], bytes(r["dek_wrapped"]), r["master_key_id"]) for r in await cur.fetchall()]


async def set_wrapped(conn: Conn, credential_id: str, dek_wrapped: bytes, master_key_id: str) -> None:
    # updated_at moves with the trigger; last_rotated_at is for secret rotations, not re-wraps.
    await conn.execute(
        "UPDATE provider_credentials SET dek_wrapped = %s, master_key_id = %s WHERE id = %s",
        (dek_wrapped, master_key_id, credential_id),
    )


async def master_key_ids(conn: Conn) -> dict[str, int]:
    """How many rows each master key wraps."""
    cur = await conn.execute("SELECT master_key_id, count(*) AS n FROM provider_credentials GROUP BY master_key_id")
    return {r["master_key_id"]: int(r["n"]) for r in await cur.fetchall()}


# -- rotation checkpoints (system_tx only; relay_app has no access) -----------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: str
    from_master_key_id: str
    to_master_key_id: str
    last_credential_id: str | None
    rows_done: int
    status: str


_CHECKPOINT = "id, from_master_key_id, to_master_key_id, last_credential_id, rows_done, status"


async def running_checkpoints(conn: Conn, from_id: str) -> list[Checkpoint]:
    cur = await conn.execute(
        f"""SELECT {_CHECKPOINT} FROM credential_rotation_checkpoints
             WHERE from_master_key_id = %s AND status = 'running' ORDER BY started_at, id""",
        (from_id,),
    )
    return [Checkpoint(**r) for r in await cur.fetchall()]


async def start_checkpoint(conn: Conn, run_id: str, from_id: str, to_id: str) -> Checkpoint:
    cur = await conn.execute(
        f"""INSERT INTO credential_rotation_checkpoints (id, from_master_key_id, to_master_key_id)
            VALUES (%s, %s, %s) RETURNING {_CHECKPOINT}""",
        (run_id, from_id, to_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return Checkpoint(**row)


async def advance_checkpoint(conn: Conn, run_id: str, last_id: str, rows: int) -> None:
    await conn.execute(
        """UPDATE credential_rotation_checkpoints
              SET last_credential_id = %s, rows_done = rows_done + %s WHERE id = %s""",
        (last_id, rows, run_id),
    )


async def end_checkpoint(conn: Conn, run_id: str, status: str, error: str | None = None) -> None:
    await conn.execute(
        """UPDATE credential_rotation_checkpoints
              SET status = %s, last_error = %s, completed_at = CASE WHEN %s = 'completed' THEN now() END
            WHERE id = %s""",
        (status, error, status, run_id),
    )
