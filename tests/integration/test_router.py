"""The live router end to end below the API: real Postgres (credentials,
providers, routes), real Redis (circuits, outbound windows), real HTTP to the
fake providers over loopback, the real failover loop."""

from __future__ import annotations

import asyncio
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
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.routing.candidates import CandidatePlanner, OutboundGuard
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.credential_cache import CredentialCache
from relay_server.pipeline.routing.failover import complete_with_failover, stream_with_failover
from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.pipeline.routing.route import RetryPolicy, Router
from relay_server.providers.http_client import HttpClient
from relay_server.providers.testmode import TestModeProvider
from relay_server.providers.translator import ProviderFailure
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.credentials import PostgresCredentialSource
from relay_server.storage.postgres.demo import DEMO_TENANT_ID, seed_demo
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import PostgresProviderStore
from relay_server.storage.redis.health import RedisHealthStore
from relay_server.storage.redis.outbound import REFUSED_RPM, OutboundWindows
from relay_server.storage.redis.wire import RedisWire
from relay_server.tenancy.calls import Call
from relay_server.tenancy.rbac import PLATFORM
from relay_server.tenancy.vault import CredentialSpec, CredentialVault
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault
from tests.support.pg import TestDatabase

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Rig:
    db: Database
    vault: CredentialVault
    directory: ProviderDirectory
    router: Router
    health: HealthTracker
    windows: OutboundWindows
    catalog: Catalog
    clock: Clock
    sleeps: Sleeps
    openai: FakeOpenAI
    anthropic: FakeAnthropic

    async def key(self, provider: str, secret: str, tenant: str = "", **spec: Any) -> str:
        call = Call(PLATFORM, "req_setup")
        row = await self.vault.create(call, tenant, CredentialSpec(provider_id=provider, **spec), secret)
        return row.id

    async def point(self, provider: str, base_url: str) -> None:
        async with self.db.system_tx() as conn:
            await conn.execute("UPDATE providers SET base_url = %s WHERE id = %s", (base_url, provider))
        await self.directory.load()

    def request(self, model: str = "gpt-4o-mini", *, stream: bool = False, tenant: str = DEMO_TENANT_ID,
                metadata: dict[str, str] | None = None) -> RequestContext:
        principal = Principal(tenant, "key_live", "abcd", "live", "inference")
        body: dict[str, Any] = {"model": model, "messages": MESSAGES}
        if stream:
            body["stream"] = True
        return RequestContext("req_" + os.urandom(4).hex(), "chat", body, metadata or {}, principal, model=model, stream=stream)

    async def complete(self, ctx: RequestContext) -> dict[str, Any]:
        entry = self.catalog.resolve(ctx.model, ctx.principal, "chat")  # type: ignore[arg-type]
        return await complete_with_failover(ctx, await self.router.plan(ctx, entry))

    async def stream(self, ctx: RequestContext):
        entry = self.catalog.resolve(ctx.model, ctx.principal, "chat")  # type: ignore[arg-type]
        return stream_with_failover(ctx, await self.router.plan(ctx, entry))


def authorizations(fake: FakeOpenAI) -> list[str]:
    return [r.headers.get("authorization", "").removeprefix("Bearer ") for r in fake.requests if r.path.endswith("/completions")]


@pytest_asyncio.fixture
async def rig(pg_db: TestDatabase, database: Database, redis_client: Redis, redis_wire: RedisWire) -> AsyncIterator[Rig]:
    seed_demo(pg_db.owner_dsn)
    keyring = Keyring.parse(base64.b64encode(os.urandom(32)).decode())
    assert keyring is not None
    clock, sleeps = Clock(), Sleeps()
    client = HttpClient.create()
    async with FakeOpenAI() as openai, FakeAnthropic() as anthropic:
        directory = ProviderDirectory(PostgresProviderStore(database), client)
        catalog = Catalog(PostgresCatalogStore(database))
        await catalog.load()
        credentials = CredentialCache(PostgresCredentialSource(database).routable, ttl_s=0)
        health = HealthTracker(RedisHealthStore(redis_client, clock=clock), CircuitPolicy(2, 30), clock=clock)
        windows = OutboundWindows(redis_client, wire=redis_wire, clock=clock)  # as the server builds it
        planner = CandidatePlanner(
            catalog, directory, credentials, health, OutboundGuard(windows), keyring,
            policy=RetryPolicy(sleep=sleeps), timeout_s=0.5, state_reads=redis_wire,
        )  # fmt: skip
        rig = Rig(
            database, CredentialVault(database, keyring, on_change=credentials.invalidate), directory,
            Router(TestModeProvider(), planner), health, windows, catalog, clock, sleeps, openai, anthropic,
        )  # fmt: skip
        await rig.point("openai", openai.base_url)
        await rig.point("anthropic", anthropic.base_url)
        yield rig
    await client.close()


async def test_a_5xx_fails_over_to_the_next_key(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(status=500))
    ctx = rig.request()
    reply = await rig.complete(ctx)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    assert authorizations(rig.openai) == ["sk-first-1111", "sk-second-2222"]
    assert rig.sleeps.waits == [0.1] and ctx.attempts == 2


async def test_a_provider_429_switches_key_at_once_and_cools_the_key_down(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(status=429, retry_after="20"))
    await rig.complete(rig.request())
    assert rig.sleeps.waits == []
    await rig.complete(rig.request())  # the first key is cooling down: not even tried
    assert authorizations(rig.openai) == ["sk-first-1111", "sk-second-2222", "sk-second-2222"]


async def test_a_provider_4xx_is_not_retried(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(status=400, message="'messages' is malformed", code="bad_messages"))
    with pytest.raises(ProviderFailure) as info:
        await rig.complete(rig.request())
    assert info.value.http_status == 400 and info.value.code == "bad_messages"
    assert "'messages' is malformed" in info.value.message
    assert len(authorizations(rig.openai)) == 1


async def test_timeouts_fail_over_and_end_as_504(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(delay_s=5))
    assert (await rig.complete(rig.request()))["object"] == "chat.completion"
    assert authorizations(rig.openai) == ["sk-first-1111", "sk-second-2222"]

    rig.openai.inject(Fault(delay_s=5), Fault(delay_s=5), Fault(delay_s=5))
    with pytest.raises(RelayError) as info:
        await rig.complete(rig.request())
    assert info.value.kind is ErrorKind.REQUEST_TIMEOUT and info.value.http_status == 504


async def test_a_saturated_key_is_skipped(rig: Rig) -> None:
    await rig.key("openai", "sk-limited-1111", priority=10, rpm_limit=1)
    await rig.key("openai", "sk-spare-2222", priority=20)
    await rig.complete(rig.request())
    await rig.complete(rig.request())
    assert authorizations(rig.openai) == ["sk-limited-1111", "sk-spare-2222"]
    rig.clock.now += 61  # the window slides past the first request
    await rig.complete(rig.request())
    assert authorizations(rig.openai)[-1] == "sk-limited-1111"


async def test_outbound_tokens_are_reconciled_with_the_providers_count(rig: Rig) -> None:
    cid = await rig.key("openai", "sk-first-1111", tpm_limit=100_000)
    reply = await rig.complete(rig.request())
    usage = (await rig.windows.usage({"openai": [cid]}))["openai"][cid]
    assert usage.requests == 1 and usage.tokens == reply["usage"]["total_tokens"]


async def test_byok_keys_are_preferred_over_pooled_ones(rig: Rig) -> None:
    async with rig.db.system_tx() as conn:
        await conn.execute("INSERT INTO tenants (id, slug, name, plan, status) VALUES ('ten_other', 'other', 'Other', 'pro', 'active')")
    await rig.key("openai", "sk-pooled-1111", priority=1)
    await rig.key("openai", "sk-tenants-own-2222", tenant=DEMO_TENANT_ID, priority=100)
    await rig.complete(rig.request())
    await rig.complete(rig.request(tenant="ten_other"))
    assert authorizations(rig.openai) == ["sk-tenants-own-2222", "sk-pooled-1111"]


async def test_the_circuit_opens_skips_the_provider_and_recovers(rig: Rig) -> None:
    await rig.key("openai", "sk-only-1111")
    rig.openai.inject(*[Fault(status=503)] * 3)
    with pytest.raises(RelayError) as info:
        await rig.complete(rig.request())
    # Two failures open the circuit (threshold 2): the third attempt is not sent.
    assert info.value.kind is ErrorKind.PROVIDER_ERROR and len(authorizations(rig.openai)) == 2
    assert (await rig.health.availability(["openai"]))["openai"] == "open"

    with pytest.raises(RelayError) as info:
        await rig.complete(rig.request())
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE and len(authorizations(rig.openai)) == 2

    rig.openai.faults.clear()
    rig.clock.now += 31  # past the cool-down: one probe request goes through
    assert (await rig.health.availability(["openai"]))["openai"] == "half_open"
    assert (await rig.complete(rig.request()))["object"] == "chat.completion"
    assert (await rig.health.availability(["openai"]))["openai"] == "closed"


async def test_a_model_fails_over_to_another_provider_route(rig: Rig) -> None:
    async with FakeOpenAI() as backup:
        async with rig.db.system_tx() as conn:
            await conn.execute(
                "INSERT INTO providers (id, name, api, base_url, priority) VALUES ('backup', 'Backup', 'openai_compatible', %s, 50)",
                (backup.base_url,),
            )
            await conn.execute(
                "INSERT INTO model_routes (model_id, provider_id, provider_name) VALUES ('gpt-4o-mini', 'backup', 'served-mini')"
            )
        await rig.directory.load()
        await rig.key("openai", "sk-primary-1111")
        await rig.key("backup", "sk-backup-2222")
        rig.openai.inject(Fault(status=502))
        ctx = rig.request()
        await rig.complete(ctx)
        assert ctx.provider_id == "backup" and backup.last.body["model"] == "served-mini"
        assert backup.last.headers["authorization"] == "Bearer sk-backup-2222"


async def test_fallback_models_are_tried_after_the_requested_model(rig: Rig) -> None:
    await rig.key("openai", "sk-openai-1111")
    await rig.key("anthropic", "sk-ant-2222")
    rig.openai.inject(Fault(status=500))
    ctx = rig.request(metadata={"x-relay-fallback-models": "claude-3-5-haiku"})
    reply = await rig.complete(ctx)
    assert ctx.provider_id == "anthropic" and reply["object"] == "chat.completion"
    assert rig.anthropic.last.body["model"] == "claude-3-5-haiku-20241022"
    assert rig.anthropic.last.headers["x-api-key"] == "sk-ant-2222"


async def test_a_stream_fails_over_before_its_first_chunk(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(status=502))
    async with await rig.stream(rig.request(stream=True)) as chunks:
        got = [c async for c in chunks]
    assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] > 0
    assert authorizations(rig.openai) == ["sk-first-1111", "sk-second-2222"]


async def test_a_failure_mid_stream_is_raised_never_a_silent_end(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(disconnect_after=3))
    got: list[dict[str, Any]] = []
    with pytest.raises(ProviderFailure) as info:
        async with await rig.stream(rig.request(stream=True)) as chunks:
            async for chunk in chunks:
                got.append(chunk)
    assert len(got) == 3 and info.value.kind is ErrorKind.PROVIDER_ERROR
    assert len(authorizations(rig.openai)) == 1, "no failover once chunks reached the client"


async def test_closing_a_stream_closes_the_upstream_request(rig: Rig) -> None:
    await rig.key("openai", "sk-first-1111")
    rig.openai.inject(Fault(hang=True, chunk_delay_s=0.01))
    stream = await rig.stream(rig.request(stream=True))
    await anext(stream)
    await anext(stream)
    await stream.aclose()
    await asyncio.wait_for(rig.openai.disconnected.wait(), 5)
    assert rig.openai.disconnects == 1


async def test_outbound_usage_of_several_providers_in_one_round_trip_survives_a_script_flush(redis_client: Redis) -> None:
    windows = OutboundWindows(redis_client)
    taken = await windows.acquire("openai", "cred_a", rpm_limit=10, tpm_limit=None, tokens=5)
    assert not isinstance(taken, int)
    await redis_client.script_flush()  # as after a Redis restart: the pipelined EVALSHA gets NOSCRIPT
    usage = await windows.usage({"openai": ["cred_a"], "groq": ["cred_b"]})
    assert usage["openai"]["cred_a"].requests == 1 and usage["openai"]["cred_a"].tokens == 5
    assert usage["groq"]["cred_b"].requests == 0
    assert await windows.usage({}) == {}


async def test_outbound_acquire_and_settle_over_the_wire_match_the_general_client(
    redis_client: Redis, redis_wire: RedisWire
) -> None:
    wire, plain = OutboundWindows(redis_client, wire=redis_wire), OutboundWindows(redis_client)
    await redis_client.script_flush()  # the wire loads the scripts itself on NOSCRIPT
    first = await wire.acquire("openai", "cred_w", rpm_limit=2, tpm_limit=None, tokens=7)
    second = await plain.acquire("openai", "cred_w", rpm_limit=2, tpm_limit=None, tokens=3)
    assert not isinstance(first, int) and not isinstance(second, int)
    assert await wire.acquire("openai", "cred_w", rpm_limit=2, tpm_limit=None, tokens=1) == REFUSED_RPM
    await redis_client.script_flush()
    await wire.settle("openai", "cred_w", first, actual_tokens=17)  # +10 on the estimate
    usage = (await plain.usage({"openai": ["cred_w"]}))["openai"]["cred_w"]
    assert (usage.requests, usage.tokens) == (2, 20)


async def test_plan_time_reads_fall_back_when_the_usage_script_is_flushed(rig: Rig, redis_client: Redis) -> None:
    # Circuits and outbound usage are read in one pipeline; a NOSCRIPT there must not lose the usage.
    await rig.key("openai", "sk-first-1111", priority=10)
    await rig.key("openai", "sk-second-2222", priority=20)
    rig.openai.inject(Fault(status=429, retry_after="20"))
    await rig.complete(rig.request())  # cools the first key
    await redis_client.script_flush()
    await rig.complete(rig.request())  # the cooling key is still left out of the plan
    assert authorizations(rig.openai) == ["sk-first-1111", "sk-second-2222", "sk-second-2222"]
