"""relay.admin.v1.UsageService over real gRPC, on the whole app as ``serve``
builds it: usage by day/model/key/end user, per-key usage with its cap,
the request log with cursor pagination, billing periods, and who may read what."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.type import date_pb2

from relay_proto.relay.admin.v1 import usage_pb2, usage_pb2_grpc
from relay_server.app import App, add_services, build
from relay_server.domain.request import new_request_id
from relay_server.settings import Settings
from relay_server.stack.processes import free_port
from relay_server.stack.redis import RedisHandle
from tests.support.metering import MESSAGES, Key, make_key, make_tenant
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


@dataclass
class Served:
    app: App
    stub: usage_pb2_grpc.UsageServiceStub
    admin: str
    tenant: str
    keys: dict[str, Key]


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest_asyncio.fixture
async def served(pg_db: TestDatabase, redis_server: RedisHandle, tmp_path: Path) -> AsyncIterator[Served]:
    admin = secrets.token_urlsafe(16)
    settings = Settings(
        database_url=pg_db.owner_dsn, app_database_url=pg_db.app_dsn, redis_url=redis_server.url, admin_token=admin,
        state_dir=tmp_path, grpc_port=free_port(), request_log_flush_s=0.02,
    )  # fmt: skip
    app = await build(settings)
    server = grpc.aio.server()
    add_services(server, app)
    server.add_insecure_port(settings.grpc_address)
    await server.start()
    tenant = make_tenant(pg_db.owner_dsn)
    keys = {
        "main": make_key(pg_db.owner_dsn, tenant),
        "capped": make_key(pg_db.owner_dsn, tenant, cap_micros=5_000_000, cap_window="monthly"),
        "alice": make_key(pg_db.owner_dsn, tenant, end_user_id="alice"),
    }
    for name, count, model in (("main", 4, "gpt-4o-mini"), ("main", 1, "gpt-4o"), ("capped", 2, "gpt-4o-mini"),
                               ("alice", 3, "gpt-4o-mini")):  # fmt: skip
        for _ in range(count):
            admitted = await app.pipeline.admit(
                "chat", {"model": model, "messages": MESSAGES, "max_tokens": 10}, keys[name].metadata, new_request_id()
            )
            await app.pipeline.complete(admitted)
    await app.metering.writer.flush()
    await app.metering.rollup.run_once()
    await app.metering.billing.run_once()
    async with grpc.aio.insecure_channel(settings.grpc_address) as channel:
        yield Served(app, usage_pb2_grpc.UsageServiceStub(channel), admin, tenant, keys)
    await server.stop(0)
    await app.close()


async def _code(call) -> grpc.StatusCode:  # noqa: ANN001
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value.code()


async def test_usage_grouped_every_way_adds_up_to_the_request_log(served: Served) -> None:
    async with served.app.db.system_tx() as conn:
        row = await (await conn.execute(
            "SELECT count(*) AS n, sum(cost_micros) AS micros FROM requests WHERE tenant_id = %s", (served.tenant,)
        )).fetchone()  # fmt: skip
    assert row["n"] == 10
    totals = set()
    for group_by in (usage_pb2.USAGE_GROUP_BY_DAY, usage_pb2.USAGE_GROUP_BY_MODEL, usage_pb2.USAGE_GROUP_BY_API_KEY,
                     usage_pb2.USAGE_GROUP_BY_END_USER):  # fmt: skip
        reply = await served.stub.QueryUsage(
            usage_pb2.QueryUsageRequest(tenant_id=served.tenant, group_by=group_by, environment="test"),
            metadata=_auth(served.admin),
        )
        assert sum(r.cost.micros for r in reply.rows) == reply.total.cost.micros == row["micros"]
        assert sum(r.request_count for r in reply.rows) == 10
        totals.add(reply.total.cost.usd)
        if group_by == usage_pb2.USAGE_GROUP_BY_MODEL:
            assert {r.group: r.request_count for r in reply.rows} == {"gpt-4o-mini": 9, "gpt-4o": 1}
        if group_by == usage_pb2.USAGE_GROUP_BY_END_USER:
            assert {r.group: r.request_count for r in reply.rows} == {"": 7, "alice": 3}
    assert totals == {f"{row['micros'] / 1_000_000:.6f}"}
    live = await served.stub.QueryUsage(usage_pb2.QueryUsageRequest(tenant_id=served.tenant), metadata=_auth(served.admin))
    assert live.rows == [] and live.total.request_count == 0  # live (the default) is kept apart from test


async def test_keys_read_their_own_tenant_and_end_user_keys_only_themselves(served: Served, pg_db: TestDatabase) -> None:
    main, alice = served.keys["main"], served.keys["alice"]
    mine = await served.stub.QueryUsage(usage_pb2.QueryUsageRequest(), metadata=_auth(main.secret))
    assert mine.total.request_count == 10  # a test key defaults to test usage
    own = await served.stub.QueryUsage(usage_pb2.QueryUsageRequest(), metadata=_auth(alice.secret))
    assert own.total.request_count == 3
    other = usage_pb2.QueryUsageRequest(api_key_id=main.key_id)
    assert await _code(served.stub.QueryUsage(other, metadata=_auth(alice.secret))) == grpc.StatusCode.PERMISSION_DENIED
    bills = usage_pb2.ListBillingPeriodsRequest()
    assert await _code(served.stub.ListBillingPeriods(bills, metadata=_auth(alice.secret))) == grpc.StatusCode.PERMISSION_DENIED
    stranger = make_key(pg_db.owner_dsn, make_tenant(pg_db.owner_dsn))
    theirs = usage_pb2.QueryUsageRequest(tenant_id=served.tenant)
    assert await _code(served.stub.QueryUsage(theirs, metadata=_auth(stranger.secret))) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(served.stub.QueryUsage(usage_pb2.QueryUsageRequest(), metadata=_auth("nope"))) == grpc.StatusCode.UNAUTHENTICATED
    no_tenant = usage_pb2.QueryUsageRequest()
    assert await _code(served.stub.QueryUsage(no_tenant, metadata=_auth(served.admin))) == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_ranges_and_environments_are_rejected(served: Served) -> None:
    backwards = usage_pb2.QueryUsageRequest(
        tenant_id=served.tenant, start_date=date_pb2.Date(year=2026, month=3, day=2),
        end_date=date_pb2.Date(year=2026, month=3, day=1),
    )  # fmt: skip
    invalid = usage_pb2.QueryUsageRequest(tenant_id=served.tenant, start_date=date_pb2.Date(year=2026, month=2, day=30))
    bad_env = usage_pb2.QueryUsageRequest(tenant_id=served.tenant, environment="staging")
    for request in (backwards, invalid, bad_env):
        assert await _code(served.stub.QueryUsage(request, metadata=_auth(served.admin))) == grpc.StatusCode.INVALID_ARGUMENT


async def test_key_usage_reports_its_cap(served: Served) -> None:
    capped = served.keys["capped"]
    reply = await served.stub.GetApiKeyUsage(
        usage_pb2.GetApiKeyUsageRequest(key_id=capped.key_id), metadata=_auth(served.keys["main"].secret)
    )
    assert reply.total.request_count == 2 and len(reply.days) == 1
    assert reply.cap_window == "monthly" and reply.cap.micros == 5_000_000
    assert reply.cap_spent.micros == reply.total.cost.micros > 0
    assert reply.cap_remaining.micros == 5_000_000 - reply.cap_spent.micros
    uncapped = await served.stub.GetApiKeyUsage(
        usage_pb2.GetApiKeyUsageRequest(tenant_id=served.tenant, key_id=served.keys["main"].key_id),
        metadata=_auth(served.admin),
    )
    assert uncapped.total.request_count == 5 and not uncapped.HasField("cap")
    missing = usage_pb2.GetApiKeyUsageRequest(tenant_id=served.tenant, key_id="key_nope")
    assert await _code(served.stub.GetApiKeyUsage(missing, metadata=_auth(served.admin))) == grpc.StatusCode.NOT_FOUND


async def test_the_request_log_pages_newest_first_without_gaps_or_repeats(served: Served) -> None:
    seen: list[usage_pb2.RequestRecord] = []
    token = ""
    while True:
        reply = await served.stub.ListRequests(
            usage_pb2.ListRequestsRequest(tenant_id=served.tenant, page_size=3, page_token=token),
            metadata=_auth(served.admin),
        )
        seen += reply.requests
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == len({r.id for r in seen}) == 10
    times = [r.create_time.ToDatetime() for r in seen]
    assert times == sorted(times, reverse=True)
    first = seen[-1]
    assert first.status == "success" and first.environment == "test" and first.usage_source == "provider"
    assert first.total_cost.micros > 0 and first.markup_rate == "0.2000" and first.input_cost.usd
    filtered = await served.stub.ListRequests(
        usage_pb2.ListRequestsRequest(tenant_id=served.tenant, end_user_id="alice"), metadata=_auth(served.admin)
    )
    assert len(filtered.requests) == 3 and {r.api_key_id for r in filtered.requests} == {served.keys["alice"].key_id}
    bad = usage_pb2.ListRequestsRequest(tenant_id=served.tenant, page_token="!!notatoken")
    assert await _code(served.stub.ListRequests(bad, metadata=_auth(served.admin))) == grpc.StatusCode.INVALID_ARGUMENT


async def test_billing_periods_carry_line_items_per_model(served: Served) -> None:
    reply = await served.stub.ListBillingPeriods(
        usage_pb2.ListBillingPeriodsRequest(tenant_id=served.tenant), metadata=_auth(served.admin)
    )
    [period] = reply.billing_periods
    assert period.environment == "test" and period.status == "open"
    assert {li.model_id: li.request_count for li in period.line_items} == {"gpt-4o-mini": 9, "gpt-4o": 1}
    assert sum(li.total_cost.micros for li in period.line_items) == period.total_cost.micros > 0


async def test_max_groups_keeps_the_busiest_groups_and_counts_them_all(served: Served) -> None:
    def ask(n: int):  # noqa: ANN202
        request = usage_pb2.QueryUsageRequest(
            tenant_id=served.tenant, group_by=usage_pb2.USAGE_GROUP_BY_API_KEY, environment="test", max_groups=n
        )
        return served.stub.QueryUsage(request, metadata=_auth(served.admin))

    top = await ask(2)
    assert [(r.group, r.request_count) for r in top.rows] == [
        (served.keys["main"].key_id, 5), (served.keys["alice"].key_id, 3),
    ]  # fmt: skip
    assert top.group_count == 3 and top.total.request_count == 10  # the total still covers every key
    every = await ask(0)
    assert every.group_count == 3 and sorted(r.request_count for r in every.rows) == [2, 3, 5]
    assert {r.group: r.cost.micros for r in every.rows}[served.keys["main"].key_id] == top.rows[0].cost.micros
    assert await _code(ask(-1)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_per_model_day_sums_match_the_key_rows(served: Served) -> None:
    """The rollup keeps usage_daily_model equal to usage_daily summed over keys."""
    query = """SELECT date, model_id, sum(request_count) AS n, sum(cost_micros) AS micros, sum(total_cost) AS cost
                 FROM {} WHERE tenant_id = %s GROUP BY 1, 2 ORDER BY 1, 2"""
    async with served.app.db.system_tx() as conn:
        by_key = await (await conn.execute(query.format("usage_daily"), (served.tenant,))).fetchall()
        by_model = await (await conn.execute(query.format("usage_daily_model"), (served.tenant,))).fetchall()
    assert by_model == by_key and sum(r["n"] for r in by_model) == 10


async def test_one_request_by_its_id(served: Served) -> None:
    page = await served.stub.ListRequests(
        usage_pb2.ListRequestsRequest(tenant_id=served.tenant, page_size=3), metadata=_auth(served.admin)
    )
    wanted = page.requests[1]
    one = await served.stub.ListRequests(
        usage_pb2.ListRequestsRequest(tenant_id=served.tenant, request_id=wanted.id), metadata=_auth(served.admin)
    )
    assert [r.id for r in one.requests] == [wanted.id] and one.requests[0].door == "openai"
    alice = await served.stub.ListRequests(
        usage_pb2.ListRequestsRequest(request_id=wanted.id), metadata=_auth(served.keys["alice"].secret)
    )
    # An end user's key sees only its own requests, by id too.
    assert [r.id for r in alice.requests] == ([wanted.id] if wanted.api_key_id == served.keys["alice"].key_id else [])
