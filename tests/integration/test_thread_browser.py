"""The read-only thread browser behind the console's threads pages, on real Postgres: a tenant's
people see their tenant's threads and every message (tool messages included), in pages; another
tenant's thread is not found, and without ``threads:read`` nothing is shown."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres import threads as store
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.threads import NewMessage
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import SYSTEM_ROLES, AdminPrincipal
from tests.support.tenancy import operator, signup, tenancy_for


def _member(tenant_id: str, role: str = "viewer") -> Call:
    return Call(AdminPrincipal("user", "usr_reader", tenant_id, SYSTEM_ROLES[role], role=role), "req_t", None)


async def _thread(db: Database, tenant_id: str, key_id: str, thread_id: str, exchanges: int) -> None:
    async with db.tenant_tx(tenant_id) as conn:
        await store.insert_thread(conn, thread_id=thread_id, tenant_id=tenant_id, end_user_id="eu1", api_key_id=key_id,
                                  title=f"title of {thread_id}", metadata={"topic": "billing"})  # fmt: skip
        for n in range(exchanges):
            await store.insert_exchange(
                conn, tenant_id=tenant_id, thread_id=thread_id,
                user=NewMessage(id=f"msg_{thread_id}_u{n}", role="user", content=[{"type": "text", "text": f"question {n}"}]),
                assistant=NewMessage(id=f"msg_{thread_id}_a{n}", role="assistant", model_id="gpt-4o-mini",
                                     content=[{"type": "tool_use", "id": "call_1", "name": "lookup", "input": {}}]),
            )  # fmt: skip


@pytest.mark.asyncio
async def test_people_read_their_tenants_threads_only(database: Database, redis_client: Redis, redis_server: RedisHandle) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as t:
        acme, other = await signup(t, "acme"), await signup(t, "other")
        await _thread(database, acme.tenant.id, acme.first_key_id, "thr_acme_1", 3)
        await _thread(database, acme.tenant.id, acme.first_key_id, "thr_acme_2", 0)
        await _thread(database, other.tenant.id, other.first_key_id, "thr_other_1", 1)
        browser, viewer = t.thread_browser, _member(acme.tenant.id)

        listed = await browser.threads(viewer, "", end_user_id=None, after=None, limit=10)
        assert sorted(r.id for r in listed) == ["thr_acme_1", "thr_acme_2"]
        first = next(r for r in listed if r.id == "thr_acme_1")
        assert (first.message_count, first.api_key_id, first.title, first.metadata) == (6, acme.first_key_id, "title of thr_acme_1", {"topic": "billing"})

        thread, page = await browser.messages(viewer, "", "thr_acme_1", after_seq=None, limit=4)
        assert thread.id == "thr_acme_1" and [m.seq for m in page] == [1, 2, 3, 4]
        assert [m.role for m in page] == ["user", "assistant"] * 2  # replies that are only tool calls are shown too
        _, rest = await browser.messages(viewer, "", "thr_acme_1", after_seq=4, limit=4)
        assert [m.seq for m in rest] == [5, 6]

        # Another tenant's thread is not found, naming that tenant is refused, and operators name the tenant.
        assert (await _fails(browser.messages(viewer, "", "thr_other_1", after_seq=None, limit=4))).kind is ErrorKind.NOT_FOUND
        assert (await _fails(browser.threads(viewer, other.tenant.id, end_user_id=None, after=None, limit=10))).kind is ErrorKind.PERMISSION_DENIED
        assert [r.id for r in await browser.threads(operator(), other.tenant.id, end_user_id=None, after=None, limit=10)] == ["thr_other_1"]
        # Without threads:read (a management key's permissions), nothing.
        keys_only = Call(AdminPrincipal("user", "usr_x", acme.tenant.id, frozenset({"api_keys:read"}), role="custom"), "req_t", None)
        assert (await _fails(browser.threads(keys_only, "", end_user_id=None, after=None, limit=10))).kind is ErrorKind.PERMISSION_DENIED


async def _fails(coro) -> RelayError:  # noqa: ANN001
    with pytest.raises(RelayError) as info:
        await coro
    return info.value
