"""Admin principals against a real database: operator token, management
keys, dashboard JWTs (checked against the user's current role), and the
precise error of every way a credential can be wrong."""

from __future__ import annotations

import pytest

from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy import tokens
from relay_server.tenancy.calls import Call
from relay_server.tenancy.keys import KeyRequest
from relay_server.tenancy.members import MemberPermissions
from relay_server.tenancy.rbac import ACTING_OPERATOR_HEADER, SYSTEM_ROLES
from tests.support.tenancy import JWT_SECRET, operator, signup, tenancy_for

ADMIN = "operator-token-for-tests"


def _md(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _jwt(tenant_id: str, user_id: str, role: str = "owner", *, secret: str = JWT_SECRET, **kw) -> str:
    perms = kw.pop("permissions", SYSTEM_ROLES[role])
    return tokens.issue(secret, issuer=kw.pop("issuer", "relay"), user_id=user_id, tenant_id=tenant_id, tenant_slug="acme",
                        role=role, permissions=perms, **kw)  # fmt: skip


async def _fails(coro) -> RelayError:
    with pytest.raises(RelayError) as info:
        await coro
    return info.value


@pytest.mark.asyncio
async def test_every_kind_of_principal(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "acme")
        _, inference_secret = await t.keys.create(operator(), s.tenant.id, KeyRequest(name="inf", environment="test"))
        auth = AdminAuthenticator(ADMIN, keys=t.authenticator, members=MemberPermissions(database), jwt_secret=JWT_SECRET)

        assert (await auth.resolve(_md(ADMIN))).is_platform
        master = await auth.resolve(_md(s.first_key_secret))
        assert (master.kind, master.tenant_id, master.actor_id, master.environment) == ("api_key", s.tenant.id, s.first_key_id, "test")
        user = await auth.resolve(_md(_jwt(s.tenant.id, s.owner_user_id)))
        assert (user.kind, user.tenant_id, user.role, user.permissions) == ("user", s.tenant.id, "owner", SYSTEM_ROLES["owner"])

        err = await _fails(auth.resolve(_md(inference_secret)))
        assert err.kind is ErrorKind.PERMISSION_DENIED and "management key" in err.message
        assert (await _fails(auth.resolve(_md("not-a-credential")))).kind is ErrorKind.INVALID_API_KEY
        assert (await _fails(auth.resolve({}))).kind is ErrorKind.INVALID_API_KEY
        # The catalog's operator-only check refuses everyone else.
        with pytest.raises(RelayError):
            auth.authenticate(_md(s.first_key_secret))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("make", "code", "phrase"),
    [
        (lambda tid, uid: _jwt(tid, uid, secret="another-secret-entirely-of-some-length"), "invalid_token", "signature"),
        (lambda tid, uid: _jwt(tid, uid, now=1_000_000, ttl_s=60), "token_expired", "expired"),
        (lambda tid, uid: _jwt(tid, uid, issuer="someone-else"), "invalid_token", "issued"),
        (lambda tid, uid: _jwt(tid, uid)[:-3] + "abc", "invalid_token", "signature"),
        (lambda tid, uid: "a.b.c", "invalid_token", "malformed"),
        (lambda tid, uid: _jwt(tid, "usr_not_a_member"), "invalid_token", "no longer an active member"),
        (lambda tid, uid: _jwt("ten_other", uid), "invalid_token", "no longer an active member"),
    ],
)
async def test_bad_dashboard_tokens_are_precise_401s(database: Database, make, code: str, phrase: str) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "acme")
        auth = AdminAuthenticator(ADMIN, keys=t.authenticator, members=MemberPermissions(database), jwt_secret=JWT_SECRET)
        err = await _fails(auth.resolve(_md(make(s.tenant.id, s.owner_user_id))))
        assert (err.kind, err.code) == (ErrorKind.INVALID_API_KEY, code) and phrase in err.message


@pytest.mark.asyncio
async def test_a_token_grants_only_what_the_user_holds_now(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "acme")
        auth = AdminAuthenticator(ADMIN, keys=t.authenticator, members=MemberPermissions(database), jwt_secret=JWT_SECRET)
        dev = await t.members.add(operator(), s.tenant.id, "dev@acme.test", "Dev", "developer")
        # The token claims owner permissions; the database says developer.
        inflated = await auth.resolve(_md(_jwt(s.tenant.id, dev.id, "developer", permissions=SYSTEM_ROLES["owner"])))
        assert inflated.permissions == SYSTEM_ROLES["developer"]
        call = Call(inflated, "req_1")
        err = await _fails(t.members.add(call, "", "x@acme.test", "", "viewer"))
        assert err.kind is ErrorKind.PERMISSION_DENIED and "members:create" in err.message
        assert (await t.keys.create(call, "", KeyRequest(name="dev key", environment="test")))[0].created_by == dev.id
        # Removed: the unexpired token stops working at once.
        await t.members.remove(operator(), s.tenant.id, dev.id)
        assert (await _fails(auth.resolve(_md(_jwt(s.tenant.id, dev.id, "developer"))))).code == "invalid_token"


@pytest.mark.asyncio
async def test_dashboard_tokens_are_refused_when_no_secret_is_configured(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "acme")
        auth = AdminAuthenticator(ADMIN, keys=t.authenticator, members=MemberPermissions(database), jwt_secret="")
        err = await _fails(auth.resolve(_md(_jwt(s.tenant.id, s.owner_user_id))))
        assert err.kind is ErrorKind.INVALID_API_KEY and "not enabled" in err.message


@pytest.mark.asyncio
async def test_an_operator_acting_from_the_console_is_the_audited_actor(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        s = await signup(t, "acme")
        auth = AdminAuthenticator(ADMIN, keys=t.authenticator, members=MemberPermissions(database), jwt_secret=JWT_SECRET)
        acting = {**_md(ADMIN), ACTING_OPERATOR_HEADER: "Ops@Relay.test"}
        principal = await auth.resolve(acting)
        assert principal.is_platform and principal.actor_id == "ops@relay.test"
        assert auth.authenticate(acting).actor_id == "ops@relay.test"
        assert (await auth.resolve(_md(ADMIN))).actor_id == "platform_admin", "the bare token is still the platform admin"

        await t.tenants.transition(Call(principal, "req_console"), s.tenant.id, "active", "payment added")
        newest, *earlier = await t.audit.events(s.tenant.id, after=None, limit=10, action="tenant.status_changed")
        assert (newest.actor_type, newest.actor_id, newest.metadata.get("to")) == ("platform_admin", "ops@relay.test", "active")
        assert all(row.actor_id != "ops@relay.test" for row in earlier)

        # Forged: the header with any other credential is refused, never trusted.
        for token in (s.first_key_secret, _jwt(s.tenant.id, s.owner_user_id), "not-a-credential"):
            err = await _fails(auth.resolve({**_md(token), ACTING_OPERATOR_HEADER: "ops@relay.test"}))
            assert err.kind is ErrorKind.PERMISSION_DENIED and ACTING_OPERATOR_HEADER in err.message
        with pytest.raises(RelayError) as refused:
            auth.authenticate({**_md(s.first_key_secret), ACTING_OPERATOR_HEADER: "ops@relay.test"})
        assert refused.value.kind is ErrorKind.INVALID_API_KEY
        # With the admin token, a value that is not an email is a clear 400.
        assert (await _fails(auth.resolve({**_md(ADMIN), ACTING_OPERATOR_HEADER: "root; drop"}))).kind is ErrorKind.BAD_REQUEST


@pytest.mark.asyncio
async def test_console_password_changes_are_audited_in_each_tenant_of_the_account(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        first = await signup(t, "acme", owner_email="pat@people.test")
        second = await signup(t, "bolt", owner_email="pat@people.test")
        assert await t.accounts.record_password_change(operator(), "PAT@people.test", "set", "198.51.100.4") == 2
        assert await t.accounts.record_password_change(operator(), "pat@people.test", "reset", "") == 2
        for tenant_id in (first.tenant.id, second.tenant.id):
            rows = await t.audit.events(tenant_id, after=None, limit=20)
            changes = [r for r in rows if r.action.startswith("dashboard.password_")]
            assert [r.action for r in changes] == ["dashboard.password_reset", "dashboard.password_set"]
            assert all(r.actor_type == "user" and r.resource_id == "pat@people.test" for r in changes)
            assert changes[1].ip_address == "198.51.100.4"
            assert set(changes[0].metadata) == {"email"}, "never the password or the link"
        # An email of no tenant: one platform event.
        assert await t.accounts.record_password_change(operator(), "ops@relay.test", "reset", "") == 1
        err = await _fails(t.accounts.record_password_change(operator(), "pat@people.test", "guessed", ""))
        assert err.kind is ErrorKind.BAD_REQUEST and err.param == "change"
        member = Call(await AdminAuthenticator(ADMIN, keys=t.authenticator, members=MemberPermissions(database),
                                               jwt_secret=JWT_SECRET).resolve(_md(_jwt(first.tenant.id, first.owner_user_id))), "r")  # fmt: skip
        assert (await _fails(t.accounts.record_password_change(member, "pat@people.test", "set", ""))).kind is ErrorKind.PERMISSION_DENIED
