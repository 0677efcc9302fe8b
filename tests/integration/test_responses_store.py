"""Stored responses on real Postgres: chains rebuilt oldest first, tenant and end-user isolation
under RLS, the tenant's retention (expired rows invisible, then swept), broken chains refused."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from relay_server.dialects.responses.output import message_item, response_object
from relay_server.dialects.responses.request import parse_turn
from relay_server.domain.request import Principal
from relay_server.errors import RelayError
from relay_server.responses.service import ResponseStore, RetentionSource
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.config import TenantConfigReader
from tests.support.metering import make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


def _principal(tenant: str, key_id: str, end_user: str | None = None) -> Principal:
    return Principal(tenant_id=tenant, key_id=key_id, key_hint="abcd", environment="test", scope="inference", end_user_id=end_user)


async def _turn(store: ResponseStore, who: Principal, text: str, answer: str, previous: str | None = None) -> str:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "input": text}
    if previous:
        body["previous_response_id"] = previous
    turn = parse_turn(body)
    response_id = f"resp_{text.replace(' ', '_')}"
    final = response_object(turn, response_id, created_at=1.0, model="gpt-4o-mini", status="completed",
                            output=[message_item(f"msg_{response_id}", answer)])  # fmt: skip
    await store.save(who, turn, final, request_id="req_1")
    return response_id


def _texts(items: list[dict[str, Any]]) -> list[str]:
    return [p["text"] for i in items for p in i.get("content", [])]


async def test_a_chain_is_rebuilt_oldest_first_and_isolated_by_tenant_and_end_user(database: Database, pg_db: TestDatabase) -> None:
    store = ResponseStore(database)
    tenant, other = make_tenant(pg_db.owner_dsn), make_tenant(pg_db.owner_dsn)
    me = _principal(tenant, make_key(pg_db.owner_dsn, tenant).key_id)
    first = await _turn(store, me, "one", "uno")
    second = await _turn(store, me, "two", "dos", first)
    assert _texts(await store.history(me, second)) == ["one", "uno", "two", "dos"]

    stranger = _principal(other, make_key(pg_db.owner_dsn, other).key_id)
    for attempt in (store.history(stranger, second), store.get(stranger, second), store.delete(stranger, second)):
        with pytest.raises(RelayError) as caught:
            await attempt
        assert caught.value.http_status == 404
    end_user = _principal(tenant, me.key_id, end_user="eu_1")
    with pytest.raises(RelayError):
        await store.get(end_user, second)  # another end user's (none) response is not theirs

    # Deleting the middle of a chain: what continues it can no longer be rebuilt.
    third = await _turn(store, me, "three", "tres", second)
    await store.delete(me, second)
    with pytest.raises(RelayError) as broken:
        await store.history(me, third)
    assert broken.value.http_status == 404 and second in broken.value.message


async def test_store_false_keeps_nothing(database: Database, pg_db: TestDatabase) -> None:
    store = ResponseStore(database)
    tenant = make_tenant(pg_db.owner_dsn)
    me = _principal(tenant, make_key(pg_db.owner_dsn, tenant).key_id)
    turn = parse_turn({"model": "gpt-4o-mini", "input": "secret", "store": False})
    await store.save(me, turn, response_object(turn, "resp_nostore", created_at=1.0, model="m", status="completed"), request_id=None)
    with psycopg.connect(pg_db.owner_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM responses WHERE tenant_id = %s", (tenant,)).fetchone()[0] == 0


async def test_the_tenants_retention_sets_expiry_and_expired_responses_vanish(database: Database, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn, config={"response_retention_days": "3"})
    store = ResponseStore(database, RetentionSource(TenantConfigReader(database, ttl_s=60).get))
    me = _principal(tenant, make_key(pg_db.owner_dsn, tenant).key_id)
    kept = await _turn(store, me, "keep", "ok")
    with psycopg.connect(pg_db.owner_dsn) as conn:
        days = conn.execute("SELECT extract(epoch FROM expires_at - created_at) / 86400 FROM responses WHERE id = %s", (kept,)).fetchone()[0]
        assert round(float(days)) == 3
        conn.execute("UPDATE responses SET expires_at = now() - interval '1 second' WHERE id = %s", (kept,))
    with pytest.raises(RelayError):
        await store.get(me, kept)
    with pytest.raises(RelayError):
        await store.history(me, kept)
    assert await store.sweep() >= 1
    with psycopg.connect(pg_db.owner_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM responses WHERE id = %s", (kept,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM response_input_items WHERE response_id = %s", (kept,)).fetchone()[0] == 0
