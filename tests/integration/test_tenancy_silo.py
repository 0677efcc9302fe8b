"""Silo tenants: a second database named in settings holds the tenant's data
plane; the control plane (tenant, keys, audit) stays shared.  Two real
databases on the session's Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from relay_server.tenancy.keys import KeyRequest
from tests.support.pg import PgCluster, TestDatabase
from tests.support.tenancy import operator, signup, tenancy_for


@pytest.fixture
def silo_db(pg_cluster: PgCluster) -> Iterator[TestDatabase]:
    db = pg_cluster.create_database("relay_silo")
    yield db
    pg_cluster.drop_database(db)


def _rows(dsn: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


@pytest.mark.asyncio
async def test_a_silo_tenant_keeps_its_data_plane_in_its_own_database(database: Database, silo_db: TestDatabase, pg_db: TestDatabase) -> None:
    silos = json.dumps({"bigcorp": silo_db.owner_dsn})
    async with tenancy_for(database, None, silo_databases=silos) as t:
        big = await signup(t, "bigcorp", silo_database="bigcorp")
        pooled = await signup(t, "smallco")
        assert big.tenant.silo_database == "bigcorp"

        # Provisioning anchored the tenant and its first key in the silo.
        assert _rows(silo_db.owner_dsn, "SELECT id FROM tenants") == [(big.tenant.id,)]
        assert _rows(silo_db.owner_dsn, "SELECT id FROM api_keys") == [(big.first_key_id,)]
        row, secret = await t.keys.create(operator(), big.tenant.id, KeyRequest(name="later", environment="test"))
        assert (row.id,) in _rows(silo_db.owner_dsn, "SELECT id FROM api_keys")

        # Authentication uses the shared control plane.
        assert (await t.authenticator.authenticate({"authorization": f"Bearer {secret}"})).tenant_id == big.tenant.id

        silo = await t.silos.database_for(big.tenant.id)
        assert silo is not database and await t.silos.database_for(pooled.tenant.id) is database
        now = datetime.now(UTC)
        async with silo.tenant_tx(big.tenant.id) as conn:  # RLS applies in the silo too
            await conn.execute(
                "INSERT INTO requests (id, created_at, tenant_id, api_key_id, request_type, started_at, status) "
                "VALUES ('req_silo', %s, %s, %s, 'chat', %s, 'success')",
                (now, big.tenant.id, row.id, now),
            )
        assert _rows(silo_db.owner_dsn, "SELECT id FROM requests") == [("req_silo",)]
        assert _rows(pg_db.owner_dsn, "SELECT id FROM requests") == []
        # The control plane (audit, keys) stayed in the shared database.
        assert _rows(silo_db.owner_dsn, "SELECT count(*) FROM audit_log") == [(0,)]
        assert _rows(pg_db.owner_dsn, "SELECT count(*) FROM api_keys WHERE tenant_id = %s", big.tenant.id) == [(2,)]

        # Hard deletion reaches both databases.
        await t.tenants.transition(operator(), big.tenant.id, "active", "")
        await t.tenants.transition(operator(), big.tenant.id, "deleted", "")
        with psycopg.connect(pg_db.owner_dsn) as conn:
            conn.execute("UPDATE tenants SET deleted_at = now() - interval '31 days', status_changed_at = now() - interval '31 days' "
                         "WHERE id = %s", (big.tenant.id,))  # fmt: skip
        await t.lifecycle_jobs.sweep()
        await t.runner.drain()
        for dsn in (silo_db.owner_dsn, pg_db.owner_dsn):
            assert _rows(dsn, "SELECT count(*) FROM tenants WHERE id = %s", big.tenant.id) == [(0,)]
        assert _rows(silo_db.owner_dsn, "SELECT count(*) FROM requests") == [(0,)]
        assert _rows(pg_db.owner_dsn, "SELECT count(*) FROM tenants WHERE id = %s", pooled.tenant.id) == [(1,)]
        await database.close()  # closes the silo's pools so its database can be dropped


@pytest.mark.asyncio
async def test_unknown_silo_names_are_refused(database: Database) -> None:
    async with tenancy_for(database, None) as t:
        with pytest.raises(RelayError) as info:
            await signup(t, "lost", silo_database="nowhere")
        assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.param == "silo_database"
        with pytest.raises(RelayError) as info:
            await t.silos.database_for("ten_missing")
        assert info.value.kind is ErrorKind.NOT_FOUND


def test_the_silo_setting_must_be_a_json_object_of_dsns() -> None:
    from relay_server.tenancy.silo import parse_silo_setting

    assert parse_silo_setting("") == {}
    assert parse_silo_setting('{"a": "postgresql://x"}') == {"a": "postgresql://x"}
    for bad in ("not json", "[1]", '{"a": ""}', '{"a": 1}'):
        with pytest.raises(ValueError):
            parse_silo_setting(bad)
