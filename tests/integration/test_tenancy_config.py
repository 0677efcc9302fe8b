"""Per-tenant configuration and feature flags: the reader the request path
uses (Redis-cached, invalidated on change), the admin operations and who may
use them, and members with their roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import SYSTEM_ROLES, AdminPrincipal
from tests.support.tenancy import operator, signup, tenancy_for


def _user(tenant_id: str, role: str, user_id: str = "usr_x") -> Call:
    return Call(AdminPrincipal("user", user_id, tenant_id, SYSTEM_ROLES[role], role=role), "req_u", "192.0.2.1")


async def _fails(coro) -> RelayError:
    with pytest.raises(RelayError) as info:
        await coro
    return info.value


@pytest.fixture
async def t(database: Database, redis_client: Redis, redis_server: RedisHandle):
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as tenancy:
        yield tenancy


@pytest.mark.asyncio
async def test_config_reader_defaults_then_changes_visible_at_once(t, database: Database, redis_client: Redis) -> None:
    s = await signup(t, "cfg", plan="pro")
    tid = s.tenant.id
    config = await t.config.get(tid)
    assert (config.plan, config.markup_rate, config.allowed_models, config.default_cache_ttl_s, config.webhook_url) == (
        "pro", Decimal("0.20"), (), None, None,
    )  # fmt: skip
    assert config.has("semantic_cache") and not config.has("byok")
    assert t.config.cache.expires_in(tid) > 0

    assert (await t.config.get(tid)) == config  # now from memory
    # Cached: a change made behind the reader's back is not seen ...
    async with database.system_tx() as conn:
        await conn.execute("INSERT INTO tenant_config (tenant_id, key, value) VALUES (%s, 'webhook_url', 'https://x.test/h')", (tid,))
    assert (await t.config.get(tid)).webhook_url is None
    # ... while a change through the admin API invalidates the cache.
    await t.tenant_settings.update_config(
        operator(), tid, {"default_cache_ttl_sec": "3600", "markup_rate": "0.15", "allowed_models": '["gpt-4o-mini","gpt-4o-mini"]'}
    )
    config = await t.config.get(tid)
    assert (config.markup_rate, config.allowed_models, config.default_cache_ttl_s, config.webhook_url) == (
        Decimal("0.15"), ("gpt-4o-mini",), 3600, "https://x.test/h",
    )  # fmt: skip
    after = await t.tenant_settings.update_config(operator(), tid, {"webhook_url": ""})
    assert "webhook_url" not in after and (await t.config.get(tid)).webhook_url is None


@pytest.mark.asyncio
async def test_feature_overrides_apply_expire_and_invalidate(t, database: Database, redis_client: Redis) -> None:
    tid = (await signup(t, "feat")).tenant.id
    assert not (await t.config.get(tid)).has("byok")
    until = datetime.now(UTC) + timedelta(seconds=30)
    state = await t.tenant_settings.set_override(operator(), tid, "byok", True, "pilot", until)
    assert (state.enabled, state.source, state.reason) == (True, "override", "pilot")
    assert (await t.config.get(tid)).has("byok")
    # The cache never outlives the override.
    assert 0 < t.config.cache.expires_in(tid) <= 30
    async with database.system_tx() as conn:
        await conn.execute("UPDATE tenant_feature_overrides SET expires_at = now() - interval '1 second' WHERE tenant_id = %s", (tid,))
    await t.invalidator.config_changed(tid)
    assert not (await t.config.get(tid)).has("byok")
    await t.tenant_settings.set_override(operator(), tid, "threads", False, "", None)
    assert not (await t.config.get(tid)).has("threads")
    state = await t.tenant_settings.delete_override(operator(), tid, "threads")
    assert (state.enabled, state.source) == (True, "plan")
    assert (await t.config.get(tid)).has("threads")
    async with database.system_tx() as conn:
        actions = [r["action"] for r in await (await conn.execute(
            "SELECT action FROM audit_log WHERE tenant_id = %s AND action LIKE 'feature.%%' ORDER BY created_at", (tid,))).fetchall()]  # fmt: skip
    assert actions == ["feature.override_set", "feature.override_set", "feature.override_deleted"]


@pytest.mark.asyncio
async def test_config_works_without_redis(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        tid = (await signup(t, "noredis")).tenant.id
        await t.tenant_settings.update_config(operator(), tid, {"default_cache_ttl_sec": "60"})
        assert (await t.config.get(tid)).default_cache_ttl_s == 60
        assert (await _fails(t.config.get("ten_unknown"))).kind is ErrorKind.NOT_FOUND


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "changes",
    [
        {"default_cache_ttl_sec": "-1"},
        {"default_cache_ttl_sec": "forever"},
        {"markup_rate": "eleven"},
        {"markup_rate": "11"},
        {"allowed_models": "gpt-4o"},
        {"allowed_models": '["no-such-model"]'},
        {"webhook_url": "http://example.com/hook"},
        {"webhook_url": "ftp://example.com"},
        {"colour": "blue"},
        {},
    ],
)
async def test_bad_config_is_a_400_that_changes_nothing(t, database: Database, changes: dict) -> None:
    tid = (await signup(t, "badcfg")).tenant.id
    await t.tenant_settings.update_config(operator(), tid, {"default_cache_ttl_sec": "10"})
    err = await _fails(t.tenant_settings.update_config(operator(), tid, {**({"webhook_url": "https://ok.test/h"} if changes else {}), **changes}))
    assert err.kind is ErrorKind.BAD_REQUEST
    assert await t.tenant_settings.get_config(operator(), tid) == {"default_cache_ttl_sec": "10"}


@pytest.mark.asyncio
async def test_who_may_change_what(t) -> None:
    tid = (await signup(t, "roles")).tenant.id
    owner, viewer = _user(tid, "owner"), _user(tid, "viewer")
    assert (await t.tenant_settings.update_config(owner, "", {"default_cache_ttl_sec": "5"})) == {"default_cache_ttl_sec": "5"}
    assert (await _fails(t.tenant_settings.update_config(owner, "", {"markup_rate": "0.01"}))).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.tenant_settings.update_config(viewer, "", {"default_cache_ttl_sec": "6"}))).kind is ErrorKind.PERMISSION_DENIED
    assert await t.tenant_settings.get_config(viewer, "") == {"default_cache_ttl_sec": "5"}
    assert (await _fails(t.tenant_settings.set_override(owner, "", "byok", True, "", None))).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.tenant_settings.get_config(owner, "ten_someone_else"))).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.tenant_settings.set_override(operator(), tid, "teleport", True, "", None))).param == "feature"
    # Renaming is the tenant's; the plan is the operator's (and changes the cached plan everywhere).
    assert (await t.tenants.update(owner, "", {"name": "Roles Inc"})).name == "Roles Inc"
    assert (await _fails(t.tenants.update(owner, "", {"plan": "enterprise"}))).kind is ErrorKind.PERMISSION_DENIED
    assert (await t.tenants.update(operator(), tid, {"plan": "enterprise"})).plan == "enterprise"
    assert (await t.config.get(tid)).has("byok")


@pytest.mark.asyncio
async def test_members_add_list_remove_with_guards(t, database: Database) -> None:
    s = await signup(t, "team")
    tid = s.tenant.id
    admin_member = await t.members.add(operator(), tid, "Admin@Team.test", "Ada", "admin")
    assert (admin_member.email, admin_member.role) == ("admin@team.test", "admin")
    admin = _user(tid, "admin", admin_member.id)
    dev = await t.members.add(admin, "", "dev@team.test", "", "developer")
    assert (await _fails(t.members.add(admin, "", "boss@team.test", "", "owner"))).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.members.add(admin, "", "dev@team.test", "", "viewer"))).kind is ErrorKind.CONFLICT
    assert (await _fails(t.members.add(admin, "", "x@team.test", "", "superuser"))).param == "role"
    assert [m.email for m in await t.members.list(admin, "", after=None, limit=10)] == ["owner@team.test", "admin@team.test", "dev@team.test"]
    assert (await _fails(t.members.remove(admin, "", s.owner_user_id))).kind is ErrorKind.PERMISSION_DENIED
    assert (await _fails(t.members.remove(operator(), tid, s.owner_user_id))).code == "last_owner"
    assert (await t.members.remove(admin, "", dev.id)).status == "deleted"
    assert [m.email for m in await t.members.list(admin, "", after=None, limit=10)] == ["owner@team.test", "admin@team.test"]
    # Re-adding a removed member brings it back with the new role.
    assert (await t.members.add(admin, "", "dev@team.test", "", "viewer")).role == "viewer"
    async with database.system_tx() as conn:
        rows = await (await conn.execute(
            "SELECT action, actor_id FROM audit_log WHERE tenant_id = %s AND action LIKE 'member.%%' ORDER BY created_at", (tid,))).fetchall()  # fmt: skip
    assert [r["action"] for r in rows] == ["member.added", "member.added", "member.removed", "member.added"]
    assert rows[1]["actor_id"] == admin_member.id
