"""API key management on Postgres + Redis: every operation, its audit row,
management keys and their child keys, cross-tenant refusals, rotation grace,
and bad input that must change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.keys import KeyPatch, KeyRequest
from relay_server.tenancy.rbac import MANAGEMENT_KEY_PERMISSIONS, AdminPrincipal
from tests.support.tenancy import operator, signup, tenancy_for


def _md(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def _as_key(tenant_id: str, key_id: str, environment: str = "test") -> Call:
    return Call(AdminPrincipal("api_key", key_id, tenant_id, MANAGEMENT_KEY_PERMISSIONS, environment=environment), "req_k", "198.51.100.4")


async def _audit(db: Database, tenant_id: str, action: str | None = None) -> list[dict]:
    async with db.system_tx() as conn:
        cur = await conn.execute(
            "SELECT action, actor_type, actor_id, resource_id, metadata, host(ip_address) AS ip FROM audit_log "
            "WHERE tenant_id = %s AND (%s::text IS NULL OR action = %s) ORDER BY created_at, id",
            (tenant_id, action, action),
        )
        return await cur.fetchall()


async def _fails(coro) -> RelayError:
    with pytest.raises(RelayError) as info:
        await coro
    return info.value


@pytest.fixture
async def t(database: Database, redis_client: Redis, redis_server: RedisHandle):
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as tenancy:
        yield tenancy


@pytest.mark.asyncio
async def test_create_get_list_update_and_their_audit_rows(t, database: Database) -> None:
    s = await signup(t, "acme")
    tid = s.tenant.id
    row, secret = await t.keys.create(
        operator(), tid,
        KeyRequest(name="CI", environment="test", end_user_id="user_42", allowed_models=("gpt-4o-mini",),
                   rate_limits={"rpm": 10, "tpm": 0}, spend_cap_amount="10.50", spend_cap_window="monthly"),
    )  # fmt: skip
    assert secret.startswith("rly_test_sk_") and row.key_hint == secret[-4:] and row.key_prefix == "rly_test_"
    assert (row.spend_cap_micros, row.spend_cap_window, row.rate_limit_overrides) == (10_500_000, "monthly", {"rpm": 10})
    principal = await t.authenticator.authenticate(_md(secret))
    assert principal.allowed_models == ("gpt-4o-mini",) and principal.end_user_id == "user_42" and principal.is_test
    assert (await t.keys.get(operator(), tid, row.id)).name == "CI"

    updated = await t.keys.update(operator(), tid, row.id, KeyPatch(fields=frozenset({"name", "allowed_models"}), name="CI-2"))
    assert updated.name == "CI-2" and updated.allowed_models == ()
    # The cached record (restricted to gpt-4o-mini) was purged by the update.
    assert (await t.authenticator.authenticate(_md(secret))).allowed_models == ()
    same = await t.keys.update(operator(), tid, row.id, KeyPatch(fields=frozenset({"name"}), name="CI-2"))
    assert same.name == "CI-2"  # nothing changed: no audit row either

    events = await _audit(database, tid)
    created = [e for e in events if e["action"] == "api_key.created" and e["resource_id"] == row.id]
    assert len(created) == 1 and created[0]["ip"] == "203.0.113.7" and created[0]["metadata"]["spend_cap_micros"] == 10_500_000
    assert secret not in str(events) and row.key_hash not in str(events)
    assert [e["metadata"]["changed"] for e in events if e["action"] == "api_key.updated"] == [["allowed_models", "name"]]


@pytest.mark.asyncio
async def test_list_paginates_newest_first_and_filters(t) -> None:
    tid = (await signup(t, "many")).tenant.id
    made = [(await t.keys.create(operator(), tid, KeyRequest(name=f"k{i}", environment="test", end_user_id=f"u{i % 2}")))[0] for i in range(5)]
    await t.keys.revoke(operator(), tid, made[0].id)
    seen, after = [], None
    while True:
        page = await t.keys.list(operator(), tid, status=None, end_user_id=None, after=after, limit=3)
        seen.extend(page[:2])
        if len(page) <= 2:
            break
        after = (page[1].created_at, page[1].id)
    assert [k.name for k in seen] == ["k4", "k3", "k2", "k1", "k0", "Default key"]
    only_u1 = await t.keys.list(operator(), tid, status="active", end_user_id="u1", after=None, limit=50)
    assert [k.name for k in only_u1] == ["k3", "k1"]
    revoked = await t.keys.list(operator(), tid, status="revoked", end_user_id=None, after=None, limit=50)
    assert [k.name for k in revoked] == ["k0"]


@pytest.mark.asyncio
async def test_revoke_takes_effect_at_once_and_is_idempotent(t, database: Database) -> None:
    tid = (await signup(t, "rev")).tenant.id
    row, secret = await t.keys.create(operator(), tid, KeyRequest(name="temp", environment="test"))
    await t.authenticator.authenticate(_md(secret))  # cached in process and in Redis
    revoked = await t.keys.revoke(operator(), tid, row.id)
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert (await _fails(t.authenticator.authenticate(_md(secret)))).http_status == 401
    again = await t.keys.revoke(operator(), tid, row.id)
    assert again.revoked_at == revoked.revoked_at
    assert len(await _audit(database, tid, "api_key.revoked")) == 1
    assert (await _fails(t.keys.update(operator(), tid, row.id, KeyPatch(fields=frozenset({"name"}), name="x")))).kind is ErrorKind.FAILED_PRECONDITION


@pytest.mark.asyncio
async def test_rotation_keeps_the_old_secret_for_the_grace_period_only(t, database: Database) -> None:
    tid = (await signup(t, "rot")).tenant.id
    old, old_secret = await t.keys.create(operator(), tid, KeyRequest(name="prod", environment="test", spend_cap_amount="5", spend_cap_window="daily"))
    new, new_secret, old_after = await t.keys.rotate(operator(), tid, old.id, 3600)
    assert new_secret and new.id != old.id and (new.name, new.spend_cap_micros) == ("prod", 5_000_000)
    assert old_after.rotated_to_id == new.id and old_after.grace_expires_at is not None
    assert timedelta(minutes=59) < old_after.grace_expires_at - datetime.now(UTC) <= timedelta(hours=1)
    assert (await t.authenticator.authenticate(_md(old_secret))).key_id == old.id
    assert (await t.authenticator.authenticate(_md(new_secret))).key_id == new.id
    assert (await _fails(t.keys.rotate(operator(), tid, old.id, 0))).code == "key_not_active"
    # Grace over: the row says so and the purge makes every cache agree at once.
    async with database.system_tx() as conn:
        await conn.execute("UPDATE api_keys SET grace_expires_at = now() - interval '1 second' WHERE id = %s", (old.id,))
    await t.invalidator.keys_changed(tid, [old.id], [old.key_hash])
    assert (await _fails(t.authenticator.authenticate(_md(old_secret)))).http_status == 401
    assert (await t.authenticator.authenticate(_md(new_secret))).key_id == new.id
    rotated = await _audit(database, tid, "api_key.rotated")
    assert len(rotated) == 1 and rotated[0]["metadata"]["new_key_id"] == new.id


@pytest.mark.asyncio
async def test_revoking_a_key_in_its_grace_period_ends_the_grace(t) -> None:
    tid = (await signup(t, "graceend")).tenant.id
    old, old_secret = await t.keys.create(operator(), tid, KeyRequest(name="k", environment="test"))
    await t.keys.rotate(operator(), tid, old.id, 0)  # the server's default grace (a day)
    assert (await t.authenticator.authenticate(_md(old_secret))).key_id == old.id
    await t.keys.revoke(operator(), tid, old.id)
    assert (await _fails(t.authenticator.authenticate(_md(old_secret)))).http_status == 401


@pytest.mark.asyncio
async def test_expired_keys_are_refused_and_shown_expired_by_the_sweep(t, database: Database) -> None:
    tid = (await signup(t, "exp")).tenant.id
    soon = datetime.now(UTC) + timedelta(hours=1)
    row, secret = await t.keys.create(operator(), tid, KeyRequest(name="short", environment="test", expires_at=soon))
    async with database.system_tx() as conn:
        await conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s", (row.id,))
    await t.invalidator.keys_changed(tid, [row.id], [row.key_hash])
    err = await _fails(t.authenticator.authenticate(_md(secret)))
    assert err.http_status == 401 and "expired" in err.message and secret not in err.message
    assert (await t.lifecycle_jobs.sweep())["expired_keys"] == 1
    assert (await t.keys.get(operator(), tid, row.id)).status == "expired"


@pytest.mark.asyncio
async def test_management_keys_mint_and_manage_child_keys_of_their_own_tenant_only(t, database: Database) -> None:
    acme, other = await signup(t, "acme"), await signup(t, "other")
    master = _as_key(acme.tenant.id, acme.first_key_id)
    child, child_secret = await t.keys.create(master, "", KeyRequest(name="user_42", end_user_id="user_42", spend_cap_amount="10", spend_cap_window="monthly"))
    assert (child.parent_key_id, child.created_by_key_id, child.environment, child.scope) == (acme.first_key_id, acme.first_key_id, "test", "inference")
    assert (await t.authenticator.authenticate(_md(child_secret))).end_user_id == "user_42"
    assert [k.id for k in await t.keys.list(master, "", status=None, end_user_id=None, after=None, limit=50)] == [child.id]
    assert (await t.keys.update(master, "", child.id, KeyPatch(fields=frozenset({"spend_cap"}), spend_cap_amount="20", spend_cap_window="monthly"))).spend_cap_micros == 20_000_000
    assert (await t.keys.revoke(master, acme.tenant.id, child.id)).status == "revoked"

    # Not its business: the master key itself, keys made in the dashboard, another tenant.
    dashboard_key, _ = await t.keys.create(operator(), acme.tenant.id, KeyRequest(name="dash", environment="test"))
    for key_id in (acme.first_key_id, dashboard_key.id, other.first_key_id):
        assert (await _fails(t.keys.get(master, "", key_id))).kind is ErrorKind.NOT_FOUND
        assert (await _fails(t.keys.revoke(master, "", key_id))).kind is ErrorKind.NOT_FOUND
    for call in (t.keys.get(master, other.tenant.id, other.first_key_id), t.keys.list(master, other.tenant.id, status=None, end_user_id=None, after=None, limit=5),
                 t.keys.create(master, other.tenant.id, KeyRequest(name="x"))):  # fmt: skip
        assert (await _fails(call)).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.keys.create(master, "", KeyRequest(name="x", scope="management")))).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.keys.create(master, "", KeyRequest(name="x", environment="live")))).param == "api_key.environment"
    # The other tenant's key still works; audit rows name the management key as actor.
    assert (await t.authenticator.authenticate(_md(other.first_key_secret))).tenant_id == other.tenant.id
    actors = {(e["action"], e["actor_type"], e["actor_id"]) for e in await _audit(database, acme.tenant.id) if e["resource_id"] == child.id}
    assert actors == {(a, "api_key", acme.first_key_id) for a in ("api_key.created", "api_key.updated", "api_key.revoked")}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (KeyRequest(name=""), "api_key.name"),
        (KeyRequest(name="x", environment="staging"), "api_key.environment"),
        (KeyRequest(name="x", allowed_models=("no-such-model",)), "api_key.allowed_models"),
        (KeyRequest(name="x", spend_cap_amount="ten", spend_cap_window="daily"), "api_key.spend_cap.amount_usd"),
        (KeyRequest(name="x", spend_cap_amount="-1", spend_cap_window="daily"), "api_key.spend_cap.amount_usd"),
        (KeyRequest(name="x", spend_cap_amount="1.0000001", spend_cap_window="daily"), "api_key.spend_cap.amount_usd"),
        (KeyRequest(name="x", spend_cap_amount="5"), "api_key.spend_cap.window"),
        (KeyRequest(name="x", rate_limits={"rpm": -1}), "api_key.rate_limits.rpm"),
        (KeyRequest(name="x", end_user_id="has space"), "api_key.end_user_id"),
        (KeyRequest(name="x", expires_at=datetime(2020, 1, 1, tzinfo=UTC)), "api_key.expire_time"),
    ],
)
async def test_bad_key_requests_are_400s_that_change_nothing(t, database: Database, request_: KeyRequest, param: str) -> None:
    tid = (await signup(t, "bad")).tenant.id
    async with database.system_tx() as conn:
        before = await (await conn.execute("SELECT (SELECT count(*) FROM api_keys) AS k, (SELECT count(*) FROM audit_log) AS a")).fetchone()
    err = await _fails(t.keys.create(operator(), tid, request_))
    assert (err.kind, err.param) == (ErrorKind.BAD_REQUEST, param)
    async with database.system_tx() as conn:
        after = await (await conn.execute("SELECT (SELECT count(*) FROM api_keys) AS k, (SELECT count(*) FROM audit_log) AS a")).fetchone()
    assert after == before


@pytest.mark.asyncio
async def test_unknown_tenants_and_keys_are_404s(t) -> None:
    tid = (await signup(t, "known")).tenant.id
    assert (await _fails(t.keys.create(operator(), "ten_missing", KeyRequest(name="x")))).kind is ErrorKind.NOT_FOUND
    assert (await _fails(t.keys.get(operator(), tid, "key_missing"))).kind is ErrorKind.NOT_FOUND
    assert (await _fails(t.keys.revoke(operator(), tid, "key_missing"))).kind is ErrorKind.NOT_FOUND
    assert (await _fails(t.keys.get(operator(), "", "key_x"))).kind is ErrorKind.BAD_REQUEST  # operators must name the tenant


@pytest.mark.asyncio
async def test_create_with_a_request_id_is_idempotent(t, database: Database) -> None:
    tid = (await signup(t, "idem")).tenant.id
    first, secret = await t.keys.create(operator(idempotency_key="mk-1"), tid, KeyRequest(name="once", environment="test"))
    again, again_secret = await t.keys.create(operator(idempotency_key="mk-1"), tid, KeyRequest(name="once", environment="test"))
    assert again.id == first.id and secret and again_secret == ""
    assert len(await _audit(database, tid, "api_key.created")) == 2  # the first key + this one


@pytest.mark.asyncio
async def test_last_used_is_written_in_batches(t, database: Database) -> None:
    tid = (await signup(t, "used")).tenant.id
    row, secret = await t.keys.create(operator(), tid, KeyRequest(name="k", environment="test"))
    for _ in range(3):
        await t.authenticator.authenticate(_md(secret))
    assert (await t.keys.get(operator(), tid, row.id)).last_used_at is None  # nothing written per request
    assert t.last_used.pending == 1
    assert await t.last_used.flush() == 1
    assert (await t.keys.get(operator(), tid, row.id)).last_used_at is not None


def _as_member(tenant_id: str, user_id: str, permissions: frozenset[str]) -> Call:
    return Call(AdminPrincipal("user", user_id, tenant_id, permissions, role="developer"), "req_m", "198.51.100.9")


@pytest.mark.asyncio
async def test_people_mint_child_keys_of_a_management_key_under_the_same_rule(t, database: Database) -> None:
    acme, other = await signup(t, "acme"), await signup(t, "other")
    member = _as_member(acme.tenant.id, acme.owner_user_id, frozenset({"api_keys:create", "api_keys:read"}))
    # acme's first key is its test management key: the child inherits its environment.
    child, secret = await t.keys.create(member, "", KeyRequest(name="for user_7", end_user_id="user_7", parent_key_id=acme.first_key_id))
    assert (child.parent_key_id, child.environment, child.scope, child.created_by) == (acme.first_key_id, "test", "inference", acme.owner_user_id)
    assert secret.startswith("rly_test_sk_")
    # The parent manages it as one of its own children.
    master = _as_key(acme.tenant.id, acme.first_key_id)
    assert child.id in [k.id for k in await t.keys.list(master, "", status=None, end_user_id=None, after=None, limit=50)]
    [created] = [e for e in await _audit(database, acme.tenant.id, "api_key.created") if e["resource_id"] == child.id]
    assert (created["actor_type"], created["actor_id"], created["metadata"]["parent_key_id"]) == ("user", acme.owner_user_id, acme.first_key_id)

    inference, _ = await t.keys.create(operator(), acme.tenant.id, KeyRequest(name="plain", environment="test"))
    refusals = [
        (KeyRequest(name="x", parent_key_id=inference.id), ErrorKind.BAD_REQUEST, "parent_key_id"),  # not a management key
        (KeyRequest(name="x", parent_key_id=other.first_key_id), ErrorKind.NOT_FOUND, "parent_key_id"),  # another tenant's
        (KeyRequest(name="x", parent_key_id=acme.first_key_id, environment="live"), ErrorKind.BAD_REQUEST, "api_key.environment"),
        (KeyRequest(name="x", parent_key_id=acme.first_key_id, scope="management"), ErrorKind.BAD_REQUEST, "api_key.scope"),
    ]
    before = len(await _audit(database, acme.tenant.id, "api_key.created"))
    for request_, kind, param in refusals:
        error = await _fails(t.keys.create(member, "", request_))
        assert (error.kind, error.param) == (kind, param), request_
    assert len(await _audit(database, acme.tenant.id, "api_key.created")) == before  # nothing was made
    # A management key names no other parent; without api_keys:create nobody mints.
    refused = await _fails(t.keys.create(master, "", KeyRequest(name="x", parent_key_id=inference.id)))
    assert refused.kind is ErrorKind.PERMISSION_DENIED
    reader = _as_member(acme.tenant.id, acme.owner_user_id, frozenset({"api_keys:read"}))
    assert (await _fails(t.keys.create(reader, "", KeyRequest(name="x", parent_key_id=acme.first_key_id)))).kind is ErrorKind.PERMISSION_DENIED
    # A revoked parent gets no new children.
    await t.keys.revoke(operator(), acme.tenant.id, acme.first_key_id)
    assert (await _fails(t.keys.create(member, "", KeyRequest(name="x", parent_key_id=acme.first_key_id)))).code == "key_not_active"
