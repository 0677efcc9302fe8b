"""Provider credentials against real Postgres: who may manage which keys, the
audit trail, idempotent retries, no plaintext at rest, and master-key rotation
with checkpoints that survive an interruption."""

from __future__ import annotations

import base64
import os

import psycopg
import pytest

from relay_server.crypto.envelope import open_sealed
from relay_server.crypto.keyring import Keyring
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.credentials import PostgresCredentialSource
from relay_server.storage.postgres.demo import DEMO_TENANT_ID, seed_demo
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import MANAGEMENT_KEY_PERMISSIONS, PLATFORM, SYSTEM_ROLES, AdminPrincipal
from relay_server.tenancy.vault import CredentialSpec, CredentialVault
from relay_server.workers.credential_rotation import RotationError, rotate_master_key
from tests.support.pg import TestDatabase

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

SECRET = "sk-proj-Zq8v3Kx9-very-secret-9f3a"
OTHER = "ten_other"


def new_keyring(current: str, *old: str) -> Keyring:
    ring = Keyring.parse(current, ",".join(old))
    assert ring is not None
    return ring


def raw_key(name: str) -> str:
    return f"{name}:{base64.b64encode(os.urandom(32)).decode()}"


def operator(request_id: str = "req_op") -> Call:
    return Call(PLATFORM, request_id)


def member(role: str, tenant: str = DEMO_TENANT_ID, request_id: str = "req_user") -> Call:
    principal = AdminPrincipal(kind="user", actor_id="usr_demo_owner", tenant_id=tenant, permissions=SYSTEM_ROLES[role], role=role)
    return Call(principal, request_id)


def management_key() -> Call:
    principal = AdminPrincipal(kind="api_key", actor_id="key_mgmt", tenant_id=DEMO_TENANT_ID, permissions=MANAGEMENT_KEY_PERMISSIONS)
    return Call(principal, "req_mgmt")


@pytest.fixture
def seeded(pg_db: TestDatabase) -> TestDatabase:
    seed_demo(pg_db.owner_dsn)
    with psycopg.connect(pg_db.owner_dsn) as conn:
        conn.execute(f"INSERT INTO tenants (id, slug, name, plan, status) VALUES ('{OTHER}', 'other', 'Other', 'enterprise', 'active')")
    return pg_db


def enable_byok(dsn: str, tenant: str = DEMO_TENANT_ID) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO tenant_feature_overrides (tenant_id, feature, enabled, reason) VALUES (%s, 'byok', true, 'test')",
            (tenant,),
        )


def dump(dsn: str, table: str) -> bytes:
    """What a pg_dump of the table holds (COPY ... TO STDOUT, text format)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} TO STDOUT") as copy:
            return b"".join(bytes(block) for block in copy)


async def audit_actions(db: Database) -> list[tuple[str | None, str, str]]:
    async with db.system_tx() as conn:
        cur = await conn.execute(
            "SELECT tenant_id, action, actor_type FROM audit_log WHERE resource_type = 'provider_credential' ORDER BY created_at, id"
        )
        return [(r["tenant_id"], r["action"], r["actor_type"]) for r in await cur.fetchall()]


async def test_the_database_never_holds_the_plaintext_key(seeded: TestDatabase, database: Database) -> None:
    keyring = new_keyring(raw_key("k1"))
    vault = CredentialVault(database, keyring)
    row = await vault.create(operator(), "", CredentialSpec("openai", name="pool"), SECRET)
    await vault.rotate(operator("req_rot"), "", row.id, SECRET + "-next")
    for table in ("provider_credentials", "audit_log"):
        data = dump(seeded.owner_dsn, table)
        for form in (SECRET, SECRET + "-next"):
            assert form.encode() not in data, table
            assert base64.b64encode(form.encode()) not in data, table
            assert form.encode().hex().encode() not in data, table
    assert row.key_hint == SECRET[-4:]
    # ... yet the router can decrypt it.
    [routable] = await PostgresCredentialSource(database).pooled()
    assert open_sealed(keyring, routable.sealed, routable.ref) == SECRET + "-next"


async def test_the_router_opens_the_new_secret_after_a_rotation_though_it_cached_the_old(
    seeded: TestDatabase, database: Database
) -> None:
    keyring = new_keyring(raw_key("k1"))  # one keyring, as in a worker: the vault's and the router's
    vault = CredentialVault(database, keyring)
    enable_byok(seeded.owner_dsn)
    pooled = await vault.create(operator(), "", CredentialSpec("openai", name="pool"), SECRET)
    own = await vault.create(member("admin"), "", CredentialSpec("openai", name="byok"), SECRET + "-tenant")
    source = PostgresCredentialSource(database)

    async def opened() -> dict[str, str]:
        rows = await source.pooled() + [c for c in await source.routable(DEMO_TENANT_ID) if c.tenant_id]
        return {c.id: open_sealed(keyring, c.sealed, c.ref) for c in rows}

    assert await opened() == {pooled.id: SECRET, own.id: SECRET + "-tenant"}
    assert len(keyring.opened) == 2
    await vault.rotate(operator("req_rot"), "", pooled.id, SECRET + "-next")
    await vault.rotate(member("admin", request_id="req_rot2"), "", own.id, SECRET + "-tenant-next")
    assert await opened() == {pooled.id: SECRET + "-next", own.id: SECRET + "-tenant-next"}


async def test_operators_manage_pooled_keys_with_an_audit_trail(seeded: TestDatabase, database: Database) -> None:
    changes: list[str | None] = []
    vault = CredentialVault(database, new_keyring(raw_key("k1")), on_change=changes.append)
    row = await vault.create(operator(), "", CredentialSpec("openai", name="pool-1", rpm_limit=500, tpm_limit=0, priority=5), SECRET)
    assert row.relay_owned and row.tenant_id is None and (row.rpm_limit, row.tpm_limit, row.priority) == (500, None, 5)
    rotated = await vault.rotate(operator("req_2"), "", row.id, "sk-new-secret-0000")
    assert rotated.key_hint == "0000" and rotated.last_rotated_at is not None
    disabled = await vault.disable(operator("req_3"), "", row.id)
    assert disabled.status == "disabled"
    assert await PostgresCredentialSource(database).pooled() == []
    assert await vault.disable(operator("req_4"), "", row.id) == disabled  # idempotent, no second audit row
    assert await audit_actions(database) == [
        (None, "provider_credential.created", "platform_admin"),
        (None, "provider_credential.rotated", "platform_admin"),
        (None, "provider_credential.disabled", "platform_admin"),
    ]
    assert changes == [None, None, None]


async def test_a_retried_create_with_the_same_request_id_acts_once(seeded: TestDatabase, database: Database) -> None:
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    call = operator().with_idempotency_key("create-pool-1")
    first = await vault.create(call, "", CredentialSpec("openai"), SECRET)
    again = await vault.create(call, "", CredentialSpec("openai"), SECRET)
    assert again.id == first.id
    assert len(await vault.list(operator(), "", provider_id=None, after_id=None, limit=10)) == 1


async def test_tenants_manage_their_own_byok_keys_when_the_feature_is_on(seeded: TestDatabase, database: Database) -> None:
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    with pytest.raises(RelayError) as info:
        await vault.create(member("admin"), "", CredentialSpec("anthropic"), SECRET)
    assert info.value.kind is ErrorKind.PERMISSION_DENIED and info.value.code == "feature_not_enabled"

    enable_byok(seeded.owner_dsn)
    row = await vault.create(member("admin"), "", CredentialSpec("anthropic", name="ours"), SECRET)
    assert row.tenant_id == DEMO_TENANT_ID and not row.relay_owned
    await vault.create(operator(), "", CredentialSpec("anthropic", name="pooled"), "sk-pooled-1111")
    # A tenant lists its own keys only (never Relay's pooled ones); an operator lists either.
    mine = await vault.list(member("developer"), "", provider_id=None, after_id=None, limit=10)
    assert [r.id for r in mine] == [row.id]
    assert [r.name for r in await vault.list(operator(), "", provider_id=None, after_id=None, limit=10)] == ["pooled"]
    assert [r.id for r in await vault.list(operator(), DEMO_TENANT_ID, provider_id=None, after_id=None, limit=10)] == [row.id]
    assert await audit_actions(database) == [
        (DEMO_TENANT_ID, "provider_credential.created", "user"),
        (None, "provider_credential.created", "platform_admin"),
    ]
    # The router of this tenant sees its key and the pooled one; another tenant's router does not see it.
    source = PostgresCredentialSource(database)
    assert {c.tenant_id for c in await source.routable(DEMO_TENANT_ID)} == {DEMO_TENANT_ID, None}
    assert {c.tenant_id for c in await source.routable(OTHER)} == {None}


@pytest.mark.parametrize(
    "call, tenant, code",
    [
        (lambda: member("developer"), "", "permission_denied"),  # developers may read, not create
        (lambda: member("viewer"), "", "permission_denied"),
        (management_key, "", "permission_denied"),
        (lambda: member("admin"), OTHER, "permission_denied"),  # another tenant
    ],
)
async def test_who_may_not_create_a_credential(seeded: TestDatabase, database: Database, call, tenant: str, code: str) -> None:
    enable_byok(seeded.owner_dsn)
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    with pytest.raises(RelayError) as info:
        await vault.create(call(), tenant, CredentialSpec("openai"), SECRET)
    assert info.value.code == code
    assert await audit_actions(database) == []


async def test_a_tenant_cannot_touch_another_tenants_or_pooled_keys(seeded: TestDatabase, database: Database) -> None:
    enable_byok(seeded.owner_dsn, OTHER)
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    theirs = await vault.create(member("admin", OTHER), "", CredentialSpec("openai"), SECRET)
    pooled = await vault.create(operator(), "", CredentialSpec("openai"), SECRET)
    for target in (theirs.id, pooled.id):
        with pytest.raises(RelayError) as info:
            await vault.disable(member("owner"), "", target)
        assert info.value.kind is ErrorKind.NOT_FOUND
        with pytest.raises(RelayError):
            await vault.rotate(member("owner"), "", target, "sk-hijack-0000")


@pytest.mark.parametrize(
    "spec, secret, operator_call, param",
    [
        (CredentialSpec("openai"), "", True, "secret"),
        (CredentialSpec("openai"), "sk-with space", True, "secret"),
        (CredentialSpec("openai"), "sk-line\nbreak", True, "secret"),
        (CredentialSpec("nope"), SECRET, True, "credential.provider_id"),
        (CredentialSpec("test"), SECRET, True, "credential.provider_id"),
        (CredentialSpec(""), SECRET, True, "credential.provider_id"),
        (CredentialSpec("openai", rpm_limit=-1), SECRET, True, "credential.rpm_limit"),
        (CredentialSpec("openai", base_url="ftp://x"), SECRET, True, "credential.base_url"),
        (CredentialSpec("openai", base_url="http://api.example.com/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://localhost/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://10.1.2.3/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://[::1]/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://169.254.169.254/latest"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://2852039166/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://0x7f000001/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://127.1/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://0177.0.0.1/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://169.254.43518/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://[::ffff:127.0.0.1]/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://[::ffff:169.254.169.254]/v1"), SECRET, False, "credential.base_url"),
        (CredentialSpec("openai", base_url="https://0x7f.0.0.1/v1"), SECRET, False, "credential.base_url"),
    ],
)
async def test_bad_input_is_refused(seeded: TestDatabase, database: Database, spec, secret, operator_call, param) -> None:
    enable_byok(seeded.owner_dsn)
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    with pytest.raises(RelayError) as info:
        await vault.create(operator() if operator_call else member("admin"), "", spec, secret)
    assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.param == param
    if secret:
        assert secret not in info.value.message


async def test_operators_may_point_keys_at_private_servers_and_tenants_at_public_https(seeded, database: Database) -> None:
    enable_byok(seeded.owner_dsn)
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    assert (await vault.create(operator(), "", CredentialSpec("openai", base_url="http://127.0.0.1:8000/v1"), SECRET)).base_url
    assert (await vault.create(member("admin"), "", CredentialSpec("openai", base_url="https://llm.example.com/v1"), SECRET)).base_url


async def test_without_a_master_key_nothing_can_be_stored(seeded: TestDatabase, database: Database) -> None:
    with pytest.raises(RelayError) as info:
        await CredentialVault(database, None).create(operator(), "", CredentialSpec("openai"), SECRET)
    assert "RELAY_MASTER_KEY" in info.value.message


async def test_listing_pages_by_id(seeded: TestDatabase, database: Database) -> None:
    vault = CredentialVault(database, new_keyring(raw_key("k1")))
    ids = sorted([(await vault.create(operator(f"r{i}"), "", CredentialSpec("openai"), SECRET)).id for i in range(3)])
    await vault.create(operator("r9"), "", CredentialSpec("groq"), SECRET)
    first = await vault.list(operator(), "", provider_id="openai", after_id=None, limit=2)
    rest = await vault.list(operator(), "", provider_id="openai", after_id=first[-1].id, limit=2)
    assert [r.id for r in first + rest] == ids


# --- master-key rotation ----------------------------------------------------------------------


async def _checkpoints(db: Database) -> list[dict]:
    async with db.system_tx() as conn:
        cur = await conn.execute(
            "SELECT id, from_master_key_id, to_master_key_id, last_credential_id, rows_done, status "
            "FROM credential_rotation_checkpoints ORDER BY started_at, id"
        )
        return list(await cur.fetchall())


async def test_rotation_rewraps_every_row_and_resumes_after_an_interruption(seeded, database: Database) -> None:
    old, new = raw_key("old"), raw_key("new")
    enable_byok(seeded.owner_dsn)
    vault = CredentialVault(database, new_keyring(old))
    secrets_by_id = {}
    for i in range(5):
        call = member("admin", request_id=f"r{i}") if i % 2 else operator(f"r{i}")
        row = await vault.create(call, "", CredentialSpec("openai"), f"sk-secret-{i}-abcd")
        secrets_by_id[row.id] = f"sk-secret-{i}-abcd"
    before = dump(seeded.owner_dsn, "provider_credentials")
    both = new_keyring(new, old)

    class Crash(Exception):
        pass

    async def crash_after_first_batch(run_id: str, rows: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        await rotate_master_key(database, both, batch_size=2, after_batch=crash_after_first_batch)
    [checkpoint] = await _checkpoints(database)
    assert (checkpoint["status"], checkpoint["rows_done"], checkpoint["from_master_key_id"]) == ("running", 2, "old")
    assert checkpoint["last_credential_id"] == sorted(secrets_by_id)[1]

    report = await rotate_master_key(database, both, batch_size=2)
    assert report.rows == 3 and report.runs == [checkpoint["id"]], "the same run resumed after its checkpoint"
    [done] = await _checkpoints(database)
    assert (done["status"], done["rows_done"], done["to_master_key_id"]) == ("completed", 5, "new")

    # Every row now opens with the new key alone; the secrets' ciphertext did not change.
    only_new = new_keyring(new)
    source = PostgresCredentialSource(database)
    rows = await source.pooled() + [c for c in await source.routable(DEMO_TENANT_ID) if c.tenant_id]
    assert {c.id: open_sealed(only_new, c.sealed, c.ref) for c in rows} == secrets_by_id
    assert all(c.sealed.master_key_id == "new" for c in rows)
    after = dump(seeded.owner_dsn, "provider_credentials")
    assert before != after
    assert (await rotate_master_key(database, only_new)).rows == 0


async def test_rotation_refuses_rows_whose_key_is_not_in_the_keyring(seeded, database: Database) -> None:
    await CredentialVault(database, new_keyring(raw_key("lost"))).create(operator(), "", CredentialSpec("openai"), SECRET)
    with pytest.raises(RotationError, match="'lost'"):
        await rotate_master_key(database, new_keyring(raw_key("new")))


async def test_a_row_that_does_not_unwrap_fails_the_run_and_keeps_the_checkpoint(seeded, database: Database) -> None:
    old = raw_key("old")
    row = await CredentialVault(database, new_keyring(old)).create(operator(), "", CredentialSpec("openai"), SECRET)
    async with database.system_tx() as conn:
        await conn.execute("UPDATE provider_credentials SET dek_wrapped = %s WHERE id = %s", (os.urandom(60), row.id))
    with pytest.raises(RotationError):
        await rotate_master_key(database, new_keyring(raw_key("new"), old))
    [checkpoint] = await _checkpoints(database)
    assert checkpoint["status"] == "failed" and checkpoint["rows_done"] == 0
