"""Providers and plans as operators change them, against `relay serve --workers 2` with
Redis, live keys and fake upstreams: a provider's base_url, priority and status and a
plan's quotas and features change through the admin API (gRPC and REST through Envoy),
every worker acts on the change on its very next request, every change is audited, and
only platform operators may make it."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc, plans_pb2, plans_pb2_grpc
from relay_proto.relay.v1 import chat_pb2, inference_service_pb2_grpc
from relay_server.stack.redis import RedisHandle
from tests.e2e.admin_helpers import channels_on_every_worker, error_of, rest
from tests.e2e.test_live_providers import FakeHost, environment
from tests.support.metering import make_key, make_tenant
from tests.support.pg import PgCluster, TestDatabase
from tests.support.stack import RelayStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@dataclass
class Gateway:
    stack: RelayStack
    host: FakeHost
    key: str  # a live inference key of the demo tenant
    admin: httpx.Client  # REST with the operator token
    db: TestDatabase

    def calls(self, provider: str) -> int:
        return len([r for r in self.host.fakes[provider].requests if r.path.endswith("/chat/completions")])

    def op(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.stack.admin_token}"),)

    def audit(self, resource_type: str, resource_id: str) -> list[tuple[str, dict[str, Any]]]:
        with psycopg.connect(self.db.owner_dsn) as conn:
            rows = conn.execute(
                "SELECT action, metadata FROM audit_log WHERE resource_type = %s AND resource_id = %s ORDER BY created_at, id",
                (resource_type, resource_id),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    host = FakeHost()
    host.start()
    db = pg_cluster.create_database()
    stack: RelayStack | None = None
    try:
        with environment(RELAY_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(), RELAY_HEALTH_MONITOR="false"):
            stack = start_stack(db, Path(tmp_path_factory.mktemp("relay-providers")), redis_url=redis_server.url, workers=2)
        admin = rest(stack, stack.admin_token)
        for provider in ("openai", "groq"):
            body = {"credential": {"provider_id": provider, "name": provider, "priority": 1}, "secret": f"sk-{provider}-pooled-1"}
            assert admin.post("/v1/provider-credentials", json=body).status_code == 200
        minted = admin.post("/v1/keys", json={"tenant_id": "ten_demo", "api_key": {
            "name": "providers", "environment": "KEY_ENVIRONMENT_LIVE", "scope": "KEY_SCOPE_INFERENCE"}})  # fmt: skip
        assert minted.status_code == 200, minted.text
        yield Gateway(stack, host, minted.json()["secret"], admin, db)
        admin.close()
    finally:
        if stack is not None:
            stack.stop()
        host.stop()
        pg_cluster.drop_database(db)


def _chat(channel: grpc.Channel, key: str, model: str) -> chat_pb2.ChatCompletionResponse:
    request = chat_pb2.ChatCompletionRequest(model=model)
    request.messages.add(role="user").content.string_value = "hi"
    return inference_service_pb2_grpc.InferenceServiceStub(channel).CreateChatCompletion(
        request, metadata=(("authorization", f"Bearer {key}"),), timeout=30
    )


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def _update(stub: catalog_pb2_grpc.ModelCatalogServiceStub, gw: Gateway, provider: catalog_pb2.Provider, *paths: str) -> catalog_pb2.Provider:
    request = catalog_pb2.UpdateProviderRequest(provider=provider, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
    return stub.UpdateProvider(request, metadata=gw.op(), timeout=30).provider


def test_base_url_priority_and_status_steer_every_worker_at_once(gw: Gateway) -> None:
    workers = channels_on_every_worker(gw.stack)
    stub = catalog_pb2_grpc.ModelCatalogServiceStub(workers[0])
    try:
        # REST through Envoy: both providers are pointed at the fakes (the seed's URLs are the real ones).
        for provider in ("openai", "groq"):
            r = gw.admin.patch(f"/v1/catalog/providers/{provider}", json={"base_url": gw.host.fakes[provider].base_url})
            assert r.status_code == 200, r.text
            assert r.json()["provider"]["base_url"] == gw.host.fakes[provider].base_url
        model = catalog_pb2.CatalogModel(
            relay_name="pp-chat", provider_id="openai", provider_name="gpt-4o-mini", input_cost_per_1m="1",
            output_cost_per_1m="1", context_window=8192, routes=[catalog_pb2.ModelRoute(provider_id="groq", provider_name="llama-3.1-8b-instant")],
        )  # fmt: skip
        stub.UpsertCatalogModel(catalog_pb2.UpsertCatalogModelRequest(model=model), metadata=gw.op(), timeout=30)

        openai_calls, groq_calls = gw.calls("openai"), gw.calls("groq")
        for channel in workers:  # openai (priority 10) before groq (40)
            assert _chat(channel, gw.key, "pp-chat").choices
        assert (gw.calls("openai") - openai_calls, gw.calls("groq") - groq_calls) == (len(workers), 0)

        # Priority through worker B: groq first on every worker's next request.
        updated = _update(catalog_pb2_grpc.ModelCatalogServiceStub(workers[-1]), gw, catalog_pb2.Provider(id="groq", priority=5), "priority")
        assert (updated.priority, updated.name, updated.status) == (5, "Groq", "active")
        groq_calls = gw.calls("groq")
        for channel in workers:
            assert _chat(channel, gw.key, "pp-chat").choices
        assert gw.calls("groq") - groq_calls == len(workers)

        # Disabled: never routed to; the model's other route serves it.
        disabled = _update(stub, gw, catalog_pb2.Provider(id="groq", status="disabled"), "status")
        assert disabled.status == "disabled"
        openai_calls, groq_calls = gw.calls("openai"), gw.calls("groq")
        for channel in workers:
            assert _chat(channel, gw.key, "pp-chat").choices
        assert (gw.calls("openai") - openai_calls, gw.calls("groq") - groq_calls) == (len(workers), 0)
        listed = {p.id: p for p in stub.ListProviders(catalog_pb2.ListProvidersRequest(), metadata=gw.op(), timeout=30).providers}
        assert (listed["groq"].status, listed["groq"].priority, listed["groq"].base_url) == ("disabled", 5, gw.host.fakes["groq"].base_url)

        # Enabled again (and renamed, with a region): routed to at once.
        enabled = _update(stub, gw, catalog_pb2.Provider(id="groq", status="active", name="Groq Cloud", region="us-east"),
                          "status", "name", "region")  # fmt: skip
        assert (enabled.status, enabled.name, enabled.region) == ("active", "Groq Cloud", "us-east")
        groq_calls = gw.calls("groq")
        for channel in workers:
            assert _chat(channel, gw.key, "pp-chat").choices
        assert gw.calls("groq") - groq_calls == len(workers)

        # The same values again change nothing, so nothing more is audited.
        _update(stub, gw, catalog_pb2.Provider(id="groq", status="active", priority=5), "status", "priority")
        actions = gw.audit("provider", "groq")
        assert [a for a, _ in actions] == ["catalog.provider_updated"] * 4
        assert actions[0][1]["changes"] == {"base_url": ["https://api.groq.com/openai/v1", gw.host.fakes["groq"].base_url]}
        assert actions[1][1]["changes"] == {"priority": [40, 5]}
        assert actions[2][1]["changes"] == {"status": ["active", "disabled"]}
        assert actions[3][1]["changes"]["name"] == ["Groq", "Groq Cloud"]
    finally:
        for channel in workers:
            channel.close()


def test_bad_provider_updates_are_refused_and_only_operators_may_update(gw: Gateway) -> None:
    with grpc.insecure_channel(gw.stack.grpc_addr) as channel:
        stub = catalog_pb2_grpc.ModelCatalogServiceStub(channel)
        bad = [
            (catalog_pb2.Provider(id="mistral", status="down"), "status"),
            (catalog_pb2.Provider(id="mistral", base_url="ftp://example.com"), "base_url"),
            (catalog_pb2.Provider(id="mistral", priority=-3), "priority"),
            (catalog_pb2.Provider(id="mistral", region="EU West"), "region"),
            (catalog_pb2.Provider(id="mistral", api="openai"), "api"),
            (catalog_pb2.Provider(id="mistral"), ""),
        ]
        for provider, path in bad:
            paths = [path] if path else []
            assert _code(lambda p=provider, m=paths: _update(stub, gw, p, *m)) is grpc.StatusCode.INVALID_ARGUMENT, path
        assert _code(lambda: _update(stub, gw, catalog_pb2.Provider(id="nope", priority=1), "priority")) is grpc.StatusCode.NOT_FOUND
        tenant_key = (("authorization", f"Bearer {gw.stack.test_key}"),)  # the demo tenant's management key
        request = catalog_pb2.UpdateProviderRequest(provider=catalog_pb2.Provider(id="mistral", status="disabled"),
                                                    update_mask=field_mask_pb2.FieldMask(paths=["status"]))  # fmt: skip
        assert _code(lambda: stub.UpdateProvider(request, metadata=tenant_key, timeout=30)) is grpc.StatusCode.PERMISSION_DENIED
        mistral = next(p for p in stub.ListProviders(catalog_pb2.ListProvidersRequest(), metadata=gw.op(), timeout=30).providers
                       if p.id == "mistral")  # fmt: skip
        assert (mistral.status, mistral.priority, mistral.base_url) == ("active", 30, "https://api.mistral.ai/v1")
    with rest(gw.stack, gw.stack.test_key) as tenant:
        r = tenant.patch("/v1/catalog/providers/mistral", json={"status": "disabled"})
        assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
    r = gw.admin.patch("/v1/catalog/providers/mistral", json={"status": "paused"})
    assert r.status_code == 400 and "status must be active or disabled" in error_of(r)["message"]
    assert gw.audit("provider", "mistral") == []


def _limit_of(client: openai.OpenAI) -> tuple[str | None, str | None]:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    return raw.headers.get("x-ratelimit-limit-requests"), raw.headers.get("x-ratelimit-remaining-requests")


def test_a_plan_quota_change_is_enforced_on_the_next_request(gw: Gateway) -> None:
    tenant = make_tenant(gw.db.owner_dsn, plan="starter")
    key = make_key(gw.db.owner_dsn, tenant)  # a test-mode key: limits apply, no upstream
    client = openai.OpenAI(base_url=gw.stack.base_url, api_key=key.secret, max_retries=0, timeout=30)
    assert _limit_of(client) == ("500", "499")
    try:
        r = gw.admin.patch("/v1/plans/starter", json={"set_quotas": [{"resource": "rpm", "limit": 2}], "features": {"semantic_cache": True}})
        assert r.status_code == 200, r.text
        plan = r.json()["plan"]
        assert {q["resource"]: (int(q["limit"]), q["time_window"]) for q in plan["quotas"]}["rpm"] == (2, "per_minute")
        assert plan["features"]["semantic_cache"] is True
        assert _limit_of(client) == ("2", "0")  # the very next request: two made this minute, the limit is two
        with pytest.raises(openai.RateLimitError):
            _limit_of(client)

        # Removed: the plan no longer limits requests per minute.
        with grpc.insecure_channel(gw.stack.grpc_addr) as channel:
            stub = plans_pb2_grpc.PlanServiceStub(channel)
            removed = stub.UpdatePlan(plans_pb2.UpdatePlanRequest(name="starter", remove_quotas=["rpm"]), metadata=gw.op(), timeout=30).plan
            assert "rpm" not in {q.resource for q in removed.quotas} and "tpm" in {q.resource for q in removed.quotas}
            assert _limit_of(client)[0] is None
            listed = {p.name: p for p in stub.ListPlans(plans_pb2.ListPlansRequest(), metadata=gw.op(), timeout=30).plans}
            assert list(listed) == ["free", "starter", "pro", "enterprise"]
            assert listed["starter"].features["semantic_cache"] and not listed["free"].features["semantic_cache"]
            assert {q.resource: q.limit for q in listed["pro"].quotas} == {"rpm": 3000, "tpm": 2000000, "requests_per_day": -1}
    finally:
        r = gw.admin.patch("/v1/plans/starter", json={"set_quotas": [{"resource": "rpm", "limit": 500}], "features": {"semantic_cache": False}})
        assert r.status_code == 200, r.text
    actions = gw.audit("plan", "starter")
    assert [a for a, _ in actions] == ["plan.updated"] * 3
    assert actions[0][1] == {"quotas": {"rpm": [500, 2]}, "features": {"semantic_cache": [False, True]}}
    assert actions[1][1] == {"quotas": {"rpm": [2, None]}, "features": {}}


def test_bad_plan_updates_are_refused_and_only_operators_see_plans(gw: Gateway) -> None:
    cases = [
        ("gold", {"set_quotas": [{"resource": "rpm", "limit": 5}]}, 404),
        ("free", {"set_quotas": [{"resource": "rph", "limit": 5}]}, 400),
        ("free", {"set_quotas": [{"resource": "rpm", "limit": -2}]}, 400),
        ("free", {"features": {"teleport": True}}, 400),
        ("free", {"set_quotas": [{"resource": "rpm", "limit": 5}], "remove_quotas": ["rpm"]}, 400),
        ("free", {}, 400),
    ]
    for name, body, status in cases:
        r = gw.admin.patch(f"/v1/plans/{name}", json=body)
        assert r.status_code == status, (name, body, r.text)
        assert error_of(r)["message"]
    with rest(gw.stack, gw.stack.test_key) as tenant:
        for r in (tenant.get("/v1/plans"), tenant.patch("/v1/plans/free", json={"features": {"sso": True}})):
            assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
    with grpc.insecure_channel(gw.stack.grpc_addr) as channel:
        stub = plans_pb2_grpc.PlanServiceStub(channel)
        request = plans_pb2.UpdatePlanRequest(name="free", features={"sso": True})
        assert _code(lambda: stub.UpdatePlan(request, metadata=(("authorization", f"Bearer {gw.stack.test_key}"),), timeout=30)) \
            is grpc.StatusCode.PERMISSION_DENIED
        free = next(p for p in stub.ListPlans(plans_pb2.ListPlansRequest(), metadata=gw.op(), timeout=30).plans if p.name == "free")
    assert not free.features["sso"] and {q.resource: q.limit for q in free.quotas}["rpm"] == 60
    assert gw.audit("plan", "free") == []


def test_a_plans_allowed_models_apply_at_once_to_keys_already_cached(gw: Gateway) -> None:
    tenant = make_tenant(gw.db.owner_dsn, plan="free")
    key = make_key(gw.db.owner_dsn, tenant)
    client = openai.OpenAI(base_url=gw.stack.base_url, api_key=key.secret, max_retries=0, timeout=30)
    hi = [{"role": "user", "content": "hi"}]
    for _ in range(4):  # the key's record is now cached (in each worker and in Redis)
        assert client.chat.completions.create(model="gpt-4o", messages=hi).choices
    try:
        r = gw.admin.patch("/v1/plans/free", json={"allowed_models": {"models": ["gpt-4o-mini", "claude-3-5-haiku"]}})
        assert r.status_code == 200, r.text
        assert r.json()["plan"]["allowed_models"] == ["claude-3-5-haiku-20241022", "gpt-4o-mini"]  # ids, sorted
        for _ in range(4):  # whichever worker answers
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="gpt-4o", messages=hi)
            assert client.chat.completions.create(model="gpt-4o-mini", messages=hi).choices
        r = gw.admin.patch("/v1/plans/free", json={"allowed_models": {"models": ["no-such-model"]}})
        assert r.status_code == 400 and "no-such-model" in error_of(r)["message"]
    finally:
        r = gw.admin.patch("/v1/plans/free", json={"allowed_models": {"models": []}})
        assert r.status_code == 200 and r.json()["plan"].get("allowed_models", []) == [], r.text
    for _ in range(4):
        assert client.chat.completions.create(model="gpt-4o", messages=hi).choices
    actions = gw.audit("plan", "free")
    assert [a for a, _ in actions] == ["plan.updated", "plan.updated"]
    assert actions[0][1]["allowed_models"][0] == [] and "gpt-4o-mini" in actions[0][1]["allowed_models"][1]
    assert actions[1][1]["allowed_models"][1] == []
