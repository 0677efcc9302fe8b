"""Virtual models below the API: every strategy against two fake providers of different
latency and price, over real Postgres (routes, credentials), real Redis (circuits, outbound
windows, latency EWMAs) and real HTTP on loopback.  Statistical tests are bounded (at most a
few hundred requests) and assert exact counts where the strategy is deterministic."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from relay_server.crypto.keyring import Keyring
from relay_server.domain.request import Principal, RequestContext
from relay_server.domain.routing import Target, VirtualModel
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.routing.candidates import CandidatePlanner, OutboundGuard
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.credential_cache import CredentialCache
from relay_server.pipeline.routing.failover import complete_with_failover, stream_with_failover
from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker
from relay_server.pipeline.routing.latency import RouteLatency
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.routing.route import RetryPolicy, Router
from relay_server.pipeline.routing.virtual_models import VirtualModels
from relay_server.providers.http_client import HttpClient
from relay_server.providers.testmode import TestModeProvider
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.credentials import PostgresCredentialSource
from relay_server.storage.postgres.demo import DEMO_TENANT_ID, seed_demo
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import PostgresProviderStore
from relay_server.storage.redis.health import RedisHealthStore
from relay_server.storage.redis.outbound import OutboundWindows
from relay_server.storage.redis.route_latency import RedisRouteLatency
from relay_server.storage.redis.wire import RedisWire
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import PLATFORM
from relay_server.tenancy.vault import CredentialSpec, CredentialVault
from tests.fakes import FakeOpenAI, Fault
from tests.support.pg import TestDatabase

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

MINI, LLAMA = "gpt-4o-mini", "llama-3.1-8b-instant"  # $0.15/$0.60 on openai, $0.05/$0.08 on groq


async def _no_sleep(seconds: float) -> None:
    return None


@dataclass
class Rig:
    db: Database
    directory: ProviderDirectory
    catalog: Catalog
    virtual: VirtualModels
    resolver: ModelResolver
    router: Router
    latency: RouteLatency
    openai: FakeOpenAI
    groq: FakeOpenAI

    def alias(self, strategy: str, *targets: Target, fallbacks: tuple[str, ...] = (), name: str = "fast") -> None:
        self.virtual.replace([VirtualModel("vm_" + name, name, None, strategy, targets, fallbacks)])

    def request(self, model: str = "fast", *, regions: tuple[str, ...] = (), stream: bool = False,
                **body: Any) -> RequestContext:
        principal = Principal(DEMO_TENANT_ID, "key_live", "abcd", "live", "inference", allowed_regions=regions)
        payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
        if stream:
            payload["stream"] = True
        return RequestContext("req_" + os.urandom(4).hex(), "chat", payload, {}, principal, stream=stream)

    async def send(self, ctx: RequestContext) -> RequestContext:
        entry = self.resolver.resolve(ctx, str(ctx.body["model"]))
        plan = await self.router.plan(ctx, entry)
        if ctx.stream:
            async with stream_with_failover(ctx, plan) as stream:
                async for _ in stream:
                    pass
        else:
            await complete_with_failover(ctx, plan)
        return ctx

    def counts(self) -> tuple[int, int]:
        return (len(chat_calls(self.openai)), len(chat_calls(self.groq)))


def chat_calls(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


@pytest_asyncio.fixture
async def rig(pg_db: TestDatabase, database: Database, redis_client: Redis, redis_wire: RedisWire) -> AsyncIterator[Rig]:
    seed_demo(pg_db.owner_dsn)
    keyring = Keyring.parse(base64.b64encode(os.urandom(32)).decode())
    assert keyring is not None
    client = HttpClient.create()
    async with FakeOpenAI() as openai, FakeOpenAI(models=(LLAMA,)) as groq:
        async with database.system_tx() as conn:
            for pid, url in (("openai", openai.base_url), ("groq", groq.base_url)):
                await conn.execute("UPDATE providers SET base_url = %s WHERE id = %s", (url, pid))
        directory = ProviderDirectory(PostgresProviderStore(database), client)
        await directory.load()
        catalog = Catalog(PostgresCatalogStore(database))
        await catalog.load()
        credentials = CredentialCache(PostgresCredentialSource(database).routable, ttl_s=0)
        vault = CredentialVault(database, keyring, on_change=credentials.invalidate)
        for pid in ("openai", "groq"):
            await vault.create(Call(PLATFORM, "req_setup_" + pid), "", CredentialSpec(provider_id=pid), f"sk-{pid}-1111")
        health = HealthTracker(RedisHealthStore(redis_client), CircuitPolicy(50, 30))
        virtual = VirtualModels(None)
        latency = RouteLatency(RedisRouteLatency(redis_client))
        planner = CandidatePlanner(
            catalog, directory, credentials, health, OutboundGuard(OutboundWindows(redis_client)), keyring,
            policy=RetryPolicy(sleep=_no_sleep), timeout_s=2.0, state_reads=redis_wire, virtual=virtual, latency=latency,
        )  # fmt: skip
        yield Rig(database, directory, catalog, virtual, ModelResolver(catalog, virtual), Router(TestModeProvider(), planner),
                  latency, openai, groq)  # fmt: skip
        await latency.close()
    await client.close()


async def test_weighted_is_exact_and_interleaved_over_200_requests(rig: Rig) -> None:
    rig.alias("weighted", Target(MINI, weight=3), Target(LLAMA, weight=1))
    served = [(await rig.send(rig.request())).route.target for _ in range(200)]
    assert rig.counts() == (150, 50)
    assert served.count(f"{MINI}@openai") == 150 and served.count(f"{LLAMA}@groq") == 50
    # Smooth: every window of 4 consecutive requests holds exactly one of the weight-1 target.
    assert all(served[i : i + 4].count(f"{LLAMA}@groq") == 1 for i in range(0, 200, 4))
    ctx = await rig.send(rig.request())
    assert ctx.route.alias == "fast"  # the resolver notes the alias
    assert ctx.route.reason.startswith("weighted ")


async def test_priority_sends_everything_first_and_fails_over_in_order(rig: Rig) -> None:
    rig.alias("priority", Target(LLAMA), Target(MINI))
    for _ in range(20):
        await rig.send(rig.request())
    assert rig.counts() == (0, 20)
    rig.groq.inject(Fault(status=500))
    ctx = await rig.send(rig.request())
    assert ctx.route.target == f"{MINI}@openai" and rig.counts() == (1, 21)
    assert ctx.route.reason == f"retry 2: failover from {LLAMA}@groq (priority)"
    assert ctx.attempts == 2


async def test_lowest_cost_picks_the_cheapest_target_that_supports_the_request(rig: Rig, database: Database) -> None:
    rig.alias("lowest-cost", Target(MINI), Target(LLAMA))
    for _ in range(10):
        ctx = await rig.send(rig.request())
        assert ctx.route.target == f"{LLAMA}@groq" and ctx.route.reason == "lowest-cost $0.05/$0.08 per 1M"
    async with database.system_tx() as conn:  # the cheap model does not declare json_schema support
        await conn.execute("UPDATE models SET supports_json_schema = false WHERE id = %s", (LLAMA,))
    await rig.catalog.load()
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    ctx = await rig.send(rig.request(response_format=schema))
    assert ctx.route.target == f"{MINI}@openai"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert (await rig.send(rig.request(tools=tools))).route.target == f"{LLAMA}@groq"
    image = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
    vision = rig.request()
    vision.body = {**vision.body, "messages": [{"role": "user", "content": image}]}
    assert (await rig.send(vision)).route.target == f"{MINI}@openai"  # the cheap model has no vision
    # Longer than the cheap model's context window: the other one.
    async with database.system_tx() as conn:
        await conn.execute("UPDATE models SET context_window = 10 WHERE id = %s", (LLAMA,))
    await rig.catalog.load()
    long = rig.request()
    long.body = {**long.body, "messages": [{"role": "user", "content": "word " * 200}]}
    assert (await rig.send(long)).route.target == f"{MINI}@openai"
    assert rig.counts()[1] == 11


async def test_lowest_cost_with_no_capable_target_is_a_clear_400(rig: Rig, database: Database) -> None:
    rig.alias("lowest-cost", Target(LLAMA))
    async with database.system_tx() as conn:
        await conn.execute("UPDATE models SET supports_functions = false WHERE id = %s", (LLAMA,))
    await rig.catalog.load()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(RelayError) as info:
        await rig.send(rig.request(tools=tools))
    assert info.value.http_status == 400 and info.value.code == "model_not_supported"
    assert "tools" in info.value.message and rig.counts() == (0, 0)


async def test_lowest_latency_follows_the_faster_route_and_a_recovered_route_wins_back(rig: Rig) -> None:
    rig.alias("lowest-latency", Target(MINI), Target(LLAMA))
    rig.openai.steady = Fault(delay_s=0.08)  # openai slow, groq fast

    async def phase(n: int) -> tuple[int, int]:
        before = rig.counts()
        for _ in range(n):
            await rig.send(rig.request())
            await rig.latency.flush()  # what the background flush does every 50 ms
        after = rig.counts()
        return (after[0] - before[0], after[1] - before[1])

    first = await phase(40)
    assert first[1] >= 34, first  # the fast route takes all but the exploration share (1 in 10)
    # groq degrades, openai recovers: exploration measures openai again and traffic moves back.
    rig.openai.steady, rig.groq.steady = Fault(), Fault(delay_s=0.08)
    await phase(30)  # the EWMAs move (alpha 0.3): a few explorations suffice
    settled = await phase(40)
    assert settled[0] >= 34, settled
    ewma = await rig.latency.read([(MINI, "openai"), (LLAMA, "groq")])
    assert ewma[(MINI, "openai")].total_ms < ewma[(LLAMA, "groq")].total_ms


async def test_lowest_latency_uses_time_to_first_token_for_streams(rig: Rig) -> None:
    rig.alias("lowest-latency", Target(MINI), Target(LLAMA))
    rig.openai.steady = Fault(delay_s=0.06)
    for _ in range(6):
        await rig.send(rig.request(stream=True))
        await rig.latency.flush()
    ctx = await rig.send(rig.request(stream=True))
    assert ctx.route.target == f"{LLAMA}@groq" and ctx.route.reason.startswith("lowest-latency ")


async def test_fallback_chain_runs_after_every_target(rig: Rig) -> None:
    rig.alias("priority", Target(MINI), fallbacks=(LLAMA,))
    rig.openai.inject(Fault(status=500), Fault(status=500))
    ctx = await rig.send(rig.request())
    assert ctx.route.target == f"{LLAMA}@groq" and ctx.route.reason.endswith(f"fallback {LLAMA} of fast")


async def test_residency_keeps_a_restricted_tenant_in_its_regions_even_on_failover(rig: Rig, database: Database) -> None:
    async with database.system_tx() as conn:
        await conn.execute("UPDATE providers SET region = 'us-east' WHERE id = 'openai'")
        await conn.execute("UPDATE providers SET region = 'eu-west' WHERE id = 'groq'")
    await rig.directory.load()
    rig.alias("priority", Target(LLAMA), Target(MINI))
    ctx = await rig.send(rig.request(regions=("eu-west",)))
    assert ctx.route.target == f"{LLAMA}@groq"
    # The only in-region route fails: the request fails rather than leave the region.
    rig.groq.inject(Fault(status=500), Fault(status=500), Fault(status=500))
    with pytest.raises(RelayError) as failed:
        await rig.send(rig.request(regions=("eu-west",)))
    assert failed.value.http_status == 500 or failed.value.kind is ErrorKind.PROVIDER_ERROR
    assert len(chat_calls(rig.openai)) == 0
    # A model with no route in the tenant's regions: 403 with the reason, nothing sent.
    with pytest.raises(RelayError) as refused:
        await rig.send(rig.request(MINI, regions=("eu-west",)))
    assert refused.value.http_status == 403 and refused.value.code == "region_not_allowed"
    assert "eu-west" in refused.value.message
    rig.alias("priority", Target(MINI))
    with pytest.raises(RelayError) as alias_refused:
        await rig.send(rig.request(regions=("eu-west",)))
    assert alias_refused.value.code == "region_not_allowed" and len(chat_calls(rig.openai)) == 0
    # Fallback models are held to the regions too.
    ctx = rig.request(MINI, regions=("us-east",))
    ctx.metadata = {"x-relay-fallback-models": LLAMA}
    rig.openai.inject(Fault(status=500), Fault(status=500), Fault(status=500))
    with pytest.raises(RelayError):
        await rig.send(ctx)
    assert len(chat_calls(rig.groq)) == 4  # 1 served + 3 failed above, none from this request
    # Unrestricted tenants reach every region.
    assert (await rig.send(rig.request(MINI))).route.target == f"{MINI}@openai"
