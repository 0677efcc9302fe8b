"""Archived months through the served UsageService (gRPC, as Envoy transcodes
``GET /v1/requests`` to it): the same records as before archiving, and no path
to another tenant's archived rows."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.type import date_pb2

from relay_proto.relay.admin.v1 import usage_pb2, usage_pb2_grpc
from relay_server.app import add_services, build
from relay_server.settings import Settings
from relay_server.stack.processes import free_port
from relay_server.stack.redis import RedisHandle
from tests.integration.test_archive import OLD_MONTHS, THIS_MONTH
from tests.support.history import generate, roll_up
from tests.support.metering import make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _pages(stub, token: str, **req) -> list[bytes]:  # noqa: ANN001, ANN003
    out, page_token = [], ""
    for _ in range(1000):
        resp = await stub.ListRequests(usage_pb2.ListRequestsRequest(page_size=100, page_token=page_token, **req), metadata=_auth(token))
        out += [r.SerializeToString(deterministic=True) for r in resp.requests]
        if not resp.next_page_token:
            return out
        page_token = resp.next_page_token
    raise AssertionError("pagination did not end")


def _d(day) -> date_pb2.Date:  # noqa: ANN001
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


async def test_list_requests_and_usage_over_archived_months_and_the_tenant_wall(
    pg_db: TestDatabase, redis_server: RedisHandle, tmp_path: Path
) -> None:
    admin = secrets.token_urlsafe(16)
    settings = Settings(
        database_url=pg_db.owner_dsn, app_database_url=pg_db.app_dsn, redis_url=redis_server.url, admin_token=admin,
        state_dir=tmp_path, grpc_port=free_port(), background_jobs=False, archive_url=str(tmp_path / "cold"),
    )  # fmt: skip
    a, b = make_tenant(pg_db.owner_dsn), make_tenant(pg_db.owner_dsn)
    keys = {t: make_key(pg_db.owner_dsn, t) for t in (a, b)}
    for tenant, rows in ((a, 250), (b, 80)):
        for month in OLD_MONTHS:
            generate(pg_db.owner_dsn, tenant, keys[tenant].key_id, month, rows)
        generate(pg_db.owner_dsn, tenant, keys[tenant].key_id, THIS_MONTH, 7)
    app = await build(settings)
    server = grpc.aio.server()
    add_services(server, app)
    server.add_insecure_port(settings.grpc_address)
    await server.start()
    try:
        await roll_up(app.db)
        async with grpc.aio.insecure_channel(settings.grpc_address) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            usage_req = usage_pb2.QueryUsageRequest(
                tenant_id=a, start_date=_d(OLD_MONTHS[0]), end_date=_d(THIS_MONTH + timedelta(days=27)), environment="test",
                group_by=usage_pb2.USAGE_GROUP_BY_MODEL,
            )  # fmt: skip
            before = await _pages(stub, admin, tenant_id=a)
            before_filtered = await _pages(stub, admin, tenant_id=a, status="error")
            usage_before = await stub.QueryUsage(usage_req, metadata=_auth(admin))
            report = await app.archive.archiver.run_once()
            assert len(report.partitions) == 3 and report.rows == 3 * (250 + 80)
            assert await _pages(stub, admin, tenant_id=a) == before and len(before) == 3 * 250 + 7
            assert await _pages(stub, admin, tenant_id=a, status="error") == before_filtered and before_filtered
            assert await stub.QueryUsage(usage_req, metadata=_auth(admin)) == usage_before
            assert usage_before.total.cost.micros > 0
            # B's own key: only B's rows, hot and archived; asking for A's tenant is refused, not answered.
            b_rows = await _pages(stub, keys[b].secret)
            assert len(b_rows) == 3 * 80 + 7 and not set(b_rows) & set(before)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListRequests(usage_pb2.ListRequestsRequest(tenant_id=a), metadata=_auth(keys[b].secret))
            assert refused.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.QueryUsage(usage_pb2.QueryUsageRequest(tenant_id=a), metadata=_auth(keys[b].secret))
            # A's key filtered by B's api key id finds nothing of B's.
            assert await _pages(stub, keys[a].secret, api_key_id=keys[b].key_id) == []
    finally:
        await server.stop(0)
        await app.close()
