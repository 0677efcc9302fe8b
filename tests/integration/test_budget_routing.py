"""Budget-aware routing at its boundary, through the metering pipeline: the rule reads the
same Redis spend state the caps enforce (admission's own script), and fires at exactly the
threshold — 89.9 % keeps the alias on its targets, 90 % and 90.1 % route it elsewhere.
The request log records alias, target and reason, and bills the model that answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.domain.routing import BudgetRoute, Target, VirtualModel
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.routing.virtual_models import VirtualModels
from relay_server.pipeline.steps.spend import cap_window
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.spend import cap_keys
from tests.support.metering import MESSAGES, Harness, Key, build_harness, make_key, make_tenant, settings_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio

CAP_USD = 1
CAP = 1_000_000  # micro-dollars


@pytest_asyncio.fixture
async def virtual() -> VirtualModels:
    return VirtualModels(None)


@pytest_asyncio.fixture
async def harness(
    database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path, virtual: VirtualModels
) -> AsyncIterator[Harness]:
    catalog = Catalog(PostgresCatalogStore(database))
    await catalog.load()
    h = await build_harness(
        database, redis_client, settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path), resolver=ModelResolver(catalog, virtual)
    )
    yield h
    await h.close()


async def _spent(redis: Redis, tenant: str, scope: str, subject: str, micros: int) -> None:
    """Put the cap window's settled spend exactly where the test wants it."""
    window = cap_window("monthly", datetime.now(UTC))
    await redis.hset(cap_keys(tenant, scope, subject, window.window_id)[0], mapping={"spent": micros, "reserved": 0})


async def _ask(harness: Harness, key: Key) -> tuple[str, str, str]:
    admitted = await harness.admit(key, {"model": "smart", "messages": MESSAGES, "max_tokens": 5})
    await harness.pipeline.complete(admitted)
    route = admitted.ctx.route
    return admitted.entry.relay_name, route.target, route.reason


@pytest.mark.parametrize(("spent", "routed"), [(899_000, False), (900_000, True), (901_000, True)])
async def test_a_tenant_budget_route_fires_exactly_at_its_threshold(
    harness: Harness, redis_client: Redis, pg_db: TestDatabase, virtual: VirtualModels, spent: int, routed: bool
) -> None:
    tenant = make_tenant(pg_db.owner_dsn, config={"spend_cap_usd": str(CAP_USD), "spend_cap_window": "monthly"})
    key = make_key(pg_db.owner_dsn, tenant)
    virtual.replace(
        [VirtualModel("vm_smart", "smart", None, "priority", (Target("gpt-4o"),))],
        [BudgetRoute("br_1", tenant, None, "smart", "gpt-4o-mini", 9000)],
    )
    await _spent(redis_client, tenant, "tenant", "test", spent)
    model, target, reason = await _ask(harness, key)
    if routed:
        assert model == "gpt-4o-mini" and target == "gpt-4o-mini@test"
        assert reason.startswith(f"budget {spent / 10_000:.1f}% >= 90% of cap: smart -> gpt-4o-mini")
    else:
        assert model == "gpt-4o" and target == "gpt-4o@test" and "budget" not in reason
    rows = await harness.rows(tenant)
    assert len(rows) == 1
    row = rows[0]
    assert row["route_alias"] == "smart" and row["route_target"] == target and row["route_reason"] == reason
    assert row["model_id"] == model  # billed at the price of the model that answered
    assert row["cost_micros"] > 0


async def test_a_key_rule_reads_the_keys_cap_and_wins_over_the_tenants(
    harness: Harness, redis_client: Redis, pg_db: TestDatabase, virtual: VirtualModels
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="monthly")
    other = make_key(pg_db.owner_dsn, tenant, cap_micros=CAP, cap_window="monthly")
    virtual.replace(
        [VirtualModel("vm_smart", "smart", None, "priority", (Target("gpt-4o"),))],
        [BudgetRoute("br_k", tenant, key.key_id, "smart", "gpt-4o-mini", 5000),
         BudgetRoute("br_t", tenant, None, "smart", "gpt-4o-mini", 9999)],
    )  # fmt: skip
    for k in (key, other):
        await _spent(redis_client, tenant, "key", k.key_id, 500_000)
    assert (await _ask(harness, key))[0] == "gpt-4o-mini"  # its own 50 % rule
    assert (await _ask(harness, other))[0] == "gpt-4o"  # the tenant's 99.99 % rule


async def test_without_a_cap_the_rule_never_fires(harness: Harness, pg_db: TestDatabase, virtual: VirtualModels) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    virtual.replace(
        [VirtualModel("vm_smart", "smart", None, "priority", (Target("gpt-4o"),))],
        [BudgetRoute("br_1", tenant, None, "smart", "gpt-4o-mini", 1)],
    )
    assert (await _ask(harness, key))[0] == "gpt-4o"
