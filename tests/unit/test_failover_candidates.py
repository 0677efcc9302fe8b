"""Planning candidates: order (BYOK first, provider priority, key capacity),
fallback models, open circuits, saturated keys (in memory, no services)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio

from relay_server.crypto.envelope import RecordRef, seal
from relay_server.crypto.keyring import Keyring
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.request import Principal, RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.routing.candidates import (
    CandidatePlanner,
    OutboundGuard,
    estimate_tokens,
    headroom,
    parse_fallbacks,
)
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.credential_cache import CredentialCache
from relay_server.pipeline.routing.health import CircuitPolicy, HealthTracker
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.providers.http_client import HttpClient
from relay_server.storage.postgres.credentials import RoutableCredential
from relay_server.storage.postgres.providers import Directory, ProviderRow, RouteRow
from relay_server.storage.redis.outbound import KeyUsage

KEYRING = Keyring.parse(base64.b64encode(os.urandom(32)).decode())
assert KEYRING is not None


def entry(name: str, provider: str, kind: str = "chat") -> CatalogEntry:
    return CatalogEntry(name, name, provider, provider, f"{name}-upstream", kind, Decimal(1), Decimal(2), 1000, None, provider, 0)


MODELS = [entry("gpt-x", "openai"), entry("llama-x", "groq"), entry("claude-x", "anthropic"), entry("embed-x", "openai", "embedding")]
PROVIDERS = {
    "openai": ProviderRow("openai", "OpenAI", "openai", "http://127.0.0.1:9/v1", "active", 10),
    "groq": ProviderRow("groq", "Groq", "groq", "http://127.0.0.1:9/v1", "active", 40),
    "selfhost": ProviderRow("selfhost", "Self", "openai_compatible", "http://127.0.0.1:9/v1", "active", 5),
    "anthropic": ProviderRow("anthropic", "Anthropic", "anthropic", "http://127.0.0.1:9/v1", "disabled", 20),
}
ROUTES = {
    "gpt-x": [RouteRow("gpt-x", "openai", "gpt-x-upstream", None)],
    # llama-x: Groq is its catalog provider, a self-hosted server a second route (higher priority).
    "llama-x": [RouteRow("llama-x", "groq", "llama-x-versatile", None), RouteRow("llama-x", "selfhost", "llama3", None)],
    "claude-x": [RouteRow("claude-x", "anthropic", "claude-x-upstream", None)],
}


def cred(cid: str, provider: str, tenant: str | None = None, *, priority: int = 100, rpm: int | None = None,
         tpm: int | None = None) -> RoutableCredential:
    sealed = seal(KEYRING, f"secret-{cid}", RecordRef(cid, tenant, provider))
    return RoutableCredential(cid, tenant, provider, None, rpm, tpm, priority, sealed)


class Store:
    async def load_directory(self) -> Directory:
        return Directory(dict(PROVIDERS), dict(ROUTES))


class Catalogue:
    async def load_catalog(self) -> list[CatalogEntry]:
        return MODELS


class Outbound(OutboundGuard):
    def __init__(self, usage: dict[str, dict[str, KeyUsage]]) -> None:
        super().__init__(None)
        self._fixed = usage

    async def usage(self, groups):  # type: ignore[override]
        return self._fixed


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient.create()
    yield http
    await http.close()


async def planner(client: HttpClient, creds: list[RoutableCredential], *, usage=None, health=None) -> CandidatePlanner:
    catalog = Catalog(Catalogue())
    await catalog.load()
    directory = ProviderDirectory(Store(), client)
    await directory.load()

    async def load(tenant_id: str) -> list[RoutableCredential]:
        return [c for c in creds if c.tenant_id in (None, tenant_id)]

    return CandidatePlanner(
        catalog, directory, CredentialCache(load), health or HealthTracker(None), Outbound(usage or {}), KEYRING
    )


def request(model: str = "gpt-x", fallbacks: str = "", allowed: tuple[str, ...] = (), kind: str = "chat") -> RequestContext:
    principal = Principal("ten_a", "key_a", "abcd", "live", "inference", allowed_models=allowed)
    metadata = {"x-relay-fallback-models": fallbacks} if fallbacks else {}
    return RequestContext("req_1", kind, {"model": model, "messages": [{"role": "user", "content": "hi"}]},  # type: ignore[arg-type]
                          metadata, principal, model=model)


def keys(plan) -> list[tuple[str, str, str | None]]:
    return [a.key for a in plan]


@pytest.mark.asyncio
async def test_byok_keys_come_first_then_pooled_keys_by_priority(client: HttpClient) -> None:
    creds = [cred("pool_b", "openai", priority=50), cred("pool_a", "openai", priority=100),
             cred("byok", "openai", "ten_a"), cred("other_tenant", "openai", "ten_b")]
    p = await planner(client, creds)
    plan = await p.plan(request(), MODELS[0])
    assert [a.credential_id for a in plan] == ["byok", "pool_b", "pool_a"]
    assert plan[0].byok and not plan[1].byok
    assert all(a.call.credential is None and a.call.provider_model == "gpt-x-upstream" for a in plan)


@pytest.mark.asyncio
async def test_routes_follow_provider_priority_and_skip_disabled_providers(client: HttpClient) -> None:
    creds = [cred("g1", "groq"), cred("s1", "selfhost"), cred("a1", "anthropic")]
    p = await planner(client, creds)
    plan = await p.plan(request("llama-x"), MODELS[1])
    assert [(a.provider_id, a.call.provider_model) for a in plan] == [("selfhost", "llama3"), ("groq", "llama-x-versatile")]
    with pytest.raises(RelayError) as info:  # anthropic is disabled by its operator
        await p.plan(request("claude-x"), MODELS[2])
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE


@pytest.mark.asyncio
async def test_fallback_models_follow_the_requested_models_candidates(client: HttpClient) -> None:
    p = await planner(client, [cred("o1", "openai"), cred("g1", "groq")])
    plan = await p.plan(request(fallbacks=" llama-x , gpt-x,llama-x"), MODELS[0])
    assert [(a.entry.model_id, a.provider_id) for a in plan] == [("gpt-x", "openai"), ("llama-x", "groq")]


@pytest.mark.asyncio
@pytest.mark.parametrize("fallbacks", ["nope", "embed-x", "llama-x"])
async def test_a_fallback_model_is_resolved_and_access_checked(client: HttpClient, fallbacks: str) -> None:
    p = await planner(client, [cred("o1", "openai"), cred("g1", "groq")])
    with pytest.raises(RelayError) as info:
        await p.plan(request(fallbacks=fallbacks, allowed=("gpt-x", "embed-x")), MODELS[0])
    assert info.value.param == "x-relay-fallback-models" and fallbacks in info.value.message


@pytest.mark.asyncio
async def test_open_circuits_drop_their_provider(client: HttpClient) -> None:
    health = HealthTracker(None, CircuitPolicy(threshold=1))
    await health.record("selfhost", "failure", 5)
    p = await planner(client, [cred("g1", "groq"), cred("s1", "selfhost")], health=health)
    plan = await p.plan(request("llama-x"), MODELS[1])
    assert [a.provider_id for a in plan] == ["groq"]


@pytest.mark.asyncio
async def test_saturated_keys_are_dropped_and_the_roomiest_key_goes_first(client: HttpClient) -> None:
    creds = [cred("full", "openai", rpm=10), cred("busy", "openai", rpm=10), cred("idle", "openai", tpm=1000),
             cred("cool", "openai")]
    usage = {"openai": {"full": KeyUsage(10, 0, 0), "busy": KeyUsage(8, 0, 0), "idle": KeyUsage(1, 100, 0),
                        "cool": KeyUsage(0, 0, 4000)}}
    p = await planner(client, creds, usage=usage)
    plan = await p.plan(request(), MODELS[0])
    assert [a.credential_id for a in plan] == ["idle", "busy"]


@pytest.mark.asyncio
async def test_no_credentials_is_a_503(client: HttpClient) -> None:
    p = await planner(client, [cred("b", "openai", "ten_b")])
    with pytest.raises(RelayError) as info:
        await p.plan(request(), MODELS[0])
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE


@pytest.mark.asyncio
async def test_the_gate_decrypts_the_key_for_one_call_only(client: HttpClient) -> None:
    p = await planner(client, [cred("o1", "openai")])
    plan = await p.plan(request(), MODELS[0])
    ticket = await plan[0].gate.open()
    assert ticket is not None and ticket.credential is not None and ticket.credential.api_key == "secret-o1"
    assert "secret-o1" not in repr(ticket.credential) and "secret-o1" not in repr(plan)
    from relay_server.pipeline.routing.route import AttemptResult

    await ticket.close(AttemptResult("success", 5, 10))
    assert ticket.credential is None


def test_headroom_is_the_tightest_window_left() -> None:
    c = cred("k", "openai", rpm=10, tpm=1000)
    assert headroom(c, None, 50) == 1.0
    assert headroom(c, KeyUsage(5, 100, 0), 50) == 0.5
    assert headroom(c, KeyUsage(1, 800, 0), 50) == pytest.approx(0.2)
    assert headroom(c, KeyUsage(10, 0, 0), 50) is None
    assert headroom(c, KeyUsage(1, 960, 0), 50) is None
    assert headroom(c, KeyUsage(0, 0, 0), 5000) == 1.0, "a request larger than the cap fits an idle key"
    assert headroom(c, KeyUsage(0, 0, 10), 1) is None, "cooling down after a provider 429"
    assert headroom(cred("u", "openai"), KeyUsage(10**6, 10**9, 0), 50) == 1.0


def test_fallback_header_parsing() -> None:
    assert parse_fallbacks({}) == []
    assert parse_fallbacks({"x-relay-fallback-models": " a, ,b,a "}) == ["a", "b"]
    with pytest.raises(RelayError):
        parse_fallbacks({"x-relay-fallback-models": ",".join(f"m{i}" for i in range(6))})


def test_token_estimate_counts_the_prompt_and_the_requested_output() -> None:
    small = estimate_tokens({"messages": [{"role": "user", "content": "hi"}]})
    assert 0 < small < 20
    assert estimate_tokens({"messages": [{"role": "user", "content": "x" * 4000}]}) > 1000
    assert estimate_tokens({"prompt": "hello", "max_tokens": 100}) == estimate_tokens({"prompt": "hello"}) + 100
    assert estimate_tokens({"input": ["a", "b"], "max_tokens": True}) == estimate_tokens({"input": ["a", "b"]})
