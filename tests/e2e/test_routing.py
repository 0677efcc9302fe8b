"""Smarter routing end to end, against `relay serve --workers 2` with Redis and live keys:
virtual models, budget routes and provider regions are managed over the REST admin API
(audited), every worker routes by a change on its very next request, and both the OpenAI
and the Anthropic doors say which target answered and why (`x-relay-route`,
`x-relay-route-reason`, through Envoy), which the request log records too."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import openai
import psycopg
import pytest

from relay_proto.relay.v1 import chat_pb2, inference_service_pb2_grpc
from relay_server.stack.redis import RedisHandle
from tests.e2e.admin_helpers import channels_on_every_worker, rest, wait_for
from tests.e2e.test_live_providers import FakeHost, environment
from tests.fakes import Fault
from tests.support.pg import PgCluster, TestDatabase
from tests.support.stack import RelayStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MINI, LLAMA = "gpt-4o-mini", "llama-3.1-8b-instant"
MESSAGES = [{"role": "user", "content": "Tell me about gateways."}]


@dataclass
class Routed:
    stack: RelayStack
    host: FakeHost
    key: str
    admin: httpx.Client
    db: TestDatabase

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.stack.base_url, api_key=self.key, max_retries=0, timeout=30)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.stack.base_url.removesuffix("/v1"), api_key=self.key, max_retries=0, timeout=30)

    def calls(self, provider: str) -> int:
        return len([r for r in self.host.fakes[provider].requests if r.path.endswith("/chat/completions")])

    def put_vm(self, name: str, body: dict[str, Any]) -> httpx.Response:
        return self.admin.put(f"/v1/routing/virtual-models/{name}", json=body)

    def log(self, request_id: str) -> dict[str, Any]:
        def row() -> Any:
            with psycopg.connect(self.db.owner_dsn) as conn:
                cur = conn.execute(
                    "SELECT route_alias, route_target, route_reason, model_id, provider_id, cost_micros FROM requests WHERE id = %s",
                    (request_id,),
                )
                found = cur.fetchone()
            return found and dict(zip(("alias", "target", "reason", "model_id", "provider_id", "cost_micros"), found, strict=True))

        return wait_for(row, f"the request log row of {request_id}")


@pytest.fixture(scope="module")
def routed(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    host = FakeHost()
    host.start()
    db = pg_cluster.create_database()
    stack: RelayStack | None = None
    try:
        with psycopg.connect(db.owner_dsn) as conn:
            for provider in ("openai", "groq"):
                conn.execute("UPDATE providers SET base_url = %s WHERE id = %s", (host.fakes[provider].base_url, provider))
        with environment(RELAY_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(), RELAY_HEALTH_MONITOR="false"):
            stack = start_stack(db, Path(tmp_path_factory.mktemp("relay-routing")), redis_url=redis_server.url, workers=2)
        admin = rest(stack, stack.admin_token)
        for provider in ("openai", "groq"):
            body = {"credential": {"provider_id": provider, "name": provider, "priority": 1}, "secret": f"sk-{provider}-pooled-1"}
            assert admin.post("/v1/provider-credentials", json=body).status_code == 200
        minted = admin.post("/v1/keys", json={"tenant_id": "ten_demo", "api_key": {
            "name": "routing", "environment": "KEY_ENVIRONMENT_LIVE", "scope": "KEY_SCOPE_INFERENCE"}})  # fmt: skip
        assert minted.status_code == 200, minted.text
        yield Routed(stack, host, minted.json()["secret"], admin, db)
        admin.close()
    finally:
        if stack is not None:
            stack.stop()
        host.stop()
        pg_cluster.drop_database(db)


def _grpc_route(channel: grpc.Channel, key: str, model: str) -> dict[str, str]:
    request = chat_pb2.ChatCompletionRequest(model=model)
    request.messages.add(role="user").content.string_value = "hi"
    _, call = inference_service_pb2_grpc.InferenceServiceStub(channel).CreateChatCompletion.with_call(
        request, metadata=(("authorization", f"Bearer {key}"),), timeout=30
    )
    return {k: v for k, v in call.initial_metadata() if k.startswith("x-relay-route")}


def test_a_virtual_model_change_reaches_every_worker_and_is_audited(routed: Routed) -> None:
    workers = channels_on_every_worker(routed.stack)
    try:
        created = routed.put_vm("fast", {"strategy": "priority", "targets": [{"model": LLAMA}, {"model": MINI}]})
        assert created.status_code == 200, created.text
        assert created.json()["virtual_model"]["targets"][0]["model"] == LLAMA
        for channel in workers:  # the very next request on each worker
            assert _grpc_route(channel, routed.key, "fast") == {
                "x-relay-route": f"{LLAMA}@groq", "x-relay-route-reason": "priority"}  # fmt: skip
        assert routed.put_vm("fast", {"strategy": "priority", "targets": [{"model": MINI}]}).status_code == 200
        for channel in workers:
            assert _grpc_route(channel, routed.key, "fast")["x-relay-route"] == f"{MINI}@openai"
        assert routed.admin.delete("/v1/routing/virtual-models/fast").status_code == 200
        for channel in workers:
            with pytest.raises(grpc.RpcError) as gone:
                _grpc_route(channel, routed.key, "fast")
            assert gone.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        for channel in workers:
            channel.close()
    with psycopg.connect(routed.db.owner_dsn) as conn:
        actions = [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE resource_type = 'virtual_model' ORDER BY created_at").fetchall()]  # fmt: skip
    assert actions == ["routing.virtual_model_created", "routing.virtual_model_updated", "routing.virtual_model_deleted"]


def test_both_doors_say_which_target_answered_and_why(routed: Routed) -> None:
    body = {"strategy": "weighted", "targets": [{"model": MINI, "weight": 1}, {"model": LLAMA, "provider_id": "groq", "weight": 1}]}
    assert routed.put_vm("duo", body).status_code == 200
    client = routed.openai()
    seen = []
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="duo", messages=MESSAGES)
        reply = raw.parse()
        assert reply.choices[0].message.content
        seen.append(raw.headers["x-relay-route"])
        assert raw.headers["x-relay-route-reason"] == "weighted 1/2"
        row = routed.log(raw.headers["x-request-id"])
        assert (row["alias"], row["target"], row["reason"]) == ("duo", seen[-1], "weighted 1/2")
        assert row["model_id"] == seen[-1].split("@")[0] and row["cost_micros"] > 0  # billed as the model that answered
    # Two workers, each with its own smooth round robin: over 4 requests each target answers.
    assert set(seen) == {f"{MINI}@openai", f"{LLAMA}@groq"}

    with client.chat.completions.with_streaming_response.create(model="duo", messages=MESSAGES, stream=True) as streamed:
        assert streamed.headers["x-relay-route"] in seen and streamed.headers["x-relay-route-reason"] == "weighted 1/2"
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)

    messages = routed.anthropic().messages.with_raw_response.create(model="duo", max_tokens=50, messages=MESSAGES)
    assert messages.parse().content[0].text
    assert messages.headers["x-relay-route"] in seen and messages.headers["x-relay-route-reason"] == "weighted 1/2"
    with routed.anthropic().messages.with_streaming_response.create(
        model="duo", max_tokens=50, messages=MESSAGES, stream=True
    ) as events:
        assert events.headers["x-relay-route"] in seen
        assert any(e.type == "message_stop" for e in events.parse())

    plain = client.chat.completions.with_raw_response.create(model=MINI, messages=MESSAGES)
    assert (plain.headers["x-relay-route"], plain.headers["x-relay-route-reason"]) == (f"{MINI}@openai", "model")


def test_failover_inside_a_virtual_model_is_reported(routed: Routed) -> None:
    assert routed.put_vm("sturdy", {"strategy": "priority", "targets": [{"model": MINI}, {"model": LLAMA}]}).status_code == 200
    fake = routed.host.fakes["openai"]
    routed.host.run(_inject(fake, Fault(status=500)))  # one fault: the only openai key fails once
    raw = routed.openai().chat.completions.with_raw_response.create(model="sturdy", messages=MESSAGES)
    assert raw.headers["x-relay-route"] == f"{LLAMA}@groq"
    assert raw.headers["x-relay-route-reason"].endswith(f"failover from {MINI}@openai (priority)")


async def _inject(fake: Any, *faults: Fault) -> None:
    fake.inject(*faults)


def test_residency_and_budget_routes_over_the_admin_api(routed: Routed) -> None:
    admin = routed.admin
    assert admin.put("/v1/routing/providers/openai/region", json={"region": "us-east"}).json()["region"] == "us-east"
    assert admin.put("/v1/routing/providers/groq/region", json={"region": "eu-west"}).status_code == 200
    assert admin.put("/v1/routing/providers/groq/region", json={"region": "EU West"}).status_code == 400
    assert routed.put_vm("euro", {"strategy": "priority", "targets": [{"model": MINI}, {"model": LLAMA}]}).status_code == 200
    restrict = admin.patch("/v1/tenants/ten_demo/config", json={"config": {"allowed_regions": '["eu-west"]'}})
    assert restrict.status_code == 200, restrict.text
    try:
        client = routed.openai()
        before = routed.calls("openai")
        raw = client.chat.completions.with_raw_response.create(model="euro", messages=MESSAGES)
        assert raw.headers["x-relay-route"] == f"{LLAMA}@groq"
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model=MINI, messages=MESSAGES)
        assert refused.value.status_code == 403 and refused.value.code == "region_not_allowed"
        assert "eu-west" in refused.value.message
        with pytest.raises(anthropic.PermissionDeniedError):
            routed.anthropic().messages.create(model=MINI, max_tokens=20, messages=MESSAGES)
        assert routed.calls("openai") == before  # nothing left the region
    finally:
        admin.patch("/v1/tenants/ten_demo/config", json={"config": {"allowed_regions": ""}}).raise_for_status()

    # A budget route with no cap never fires; its management is validated and audited.
    rule = {"route_to": LLAMA, "threshold_percent": "90", "tenant_id": "ten_demo"}
    created = admin.put("/v1/routing/budget-routes/euro", json=rule)
    assert created.status_code == 200 and created.json()["budget_route"]["threshold_percent"] == "90"
    assert admin.put("/v1/routing/budget-routes/euro", json={**rule, "threshold_percent": "90.001"}).status_code == 400
    assert admin.put("/v1/routing/budget-routes/euro", json={**rule, "route_to": "no-such-model"}).status_code == 400
    listed = admin.get("/v1/routing/budget-routes", params={"tenant_id": "ten_demo"}).json()["budget_routes"]
    assert [(r["alias"], r["route_to"]) for r in listed] == [("euro", LLAMA)]
    raw = routed.openai().chat.completions.with_raw_response.create(model="euro", messages=MESSAGES)
    assert "budget" not in raw.headers["x-relay-route-reason"]
    assert admin.delete("/v1/routing/budget-routes/euro", params={"tenant_id": "ten_demo"}).status_code == 200
    with psycopg.connect(routed.db.owner_dsn) as conn:
        actions = [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE action LIKE 'routing.%%' ORDER BY created_at").fetchall()]  # fmt: skip
    assert actions.count("routing.provider_region_set") == 2
    assert "routing.budget_route_created" in actions and "routing.budget_route_deleted" in actions


def test_bad_virtual_models_are_refused(routed: Routed) -> None:
    bad = [
        ({"strategy": "fastest", "targets": [{"model": MINI}]}, 400),
        ({"strategy": "priority", "targets": []}, 400),
        ({"strategy": "priority", "targets": [{"model": "no-such-model"}]}, 400),
        ({"strategy": "weighted", "targets": [{"model": MINI, "weight": 5000}]}, 400),
        ({"strategy": "priority", "targets": [{"model": MINI, "provider_id": "nope"}]}, 400),
        ({"strategy": "priority", "targets": [{"model": MINI}], "fallbacks": ["nothing"]}, 400),
    ]
    for body, status in bad:
        response = routed.put_vm("broken", body)
        assert response.status_code == status, (body, response.text)
    assert routed.put_vm(MINI, {"strategy": "priority", "targets": [{"model": LLAMA}]}).status_code == 409
    tenant_key = routed.openai()
    with pytest.raises(openai.NotFoundError):
        tenant_key.chat.completions.create(model="broken", messages=MESSAGES)
    # An inference key is no admin credential.
    with rest(routed.stack, routed.key) as as_tenant:
        assert as_tenant.put("/v1/routing/virtual-models/x", json={"targets": [{"model": MINI}]}).status_code in (401, 403)


def _relay(stack: RelayStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELAY_GRPC_ADDR": stack.grpc_addr, "RELAY_ADMIN_TOKEN": stack.admin_token}
    return subprocess.run([sys.executable, "-m", "relay_server", *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_manages_virtual_models_and_budget_routes(routed: Routed) -> None:
    made = _relay(routed.stack, "routing", "vm-set", "cli-fast", "--strategy", "weighted",
                  "--target", f"{MINI}:3", "--target", f"{LLAMA}@groq:1", "--fallback", MINI)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "cli-fast" in made.stdout and f"{LLAMA}@groq:1" in made.stdout and "weighted" in made.stdout
    listed = json.loads(_relay(routed.stack, "routing", "vm-list", "--json").stdout)
    assert "cli-fast" in [v["name"] for v in listed["virtual_models"]]
    raw = routed.openai().chat.completions.with_raw_response.create(model="cli-fast", messages=MESSAGES)
    assert raw.headers["x-relay-route-reason"].startswith("weighted ")
    rule = _relay(routed.stack, "routing", "budget-set", "cli-fast", "--tenant", "ten_demo", "--route-to", MINI, "--threshold", "99.5")
    assert rule.returncode == 0 and "99.5%" in rule.stdout, rule.stderr
    refused = _relay(routed.stack, "routing", "budget-set", "cli-fast", "--tenant", "ten_demo", "--route-to", MINI, "--threshold", "101")
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr
    assert _relay(routed.stack, "routing", "budget-delete", "cli-fast", "--tenant", "ten_demo").returncode == 0
    assert _relay(routed.stack, "routing", "vm-delete", "cli-fast").returncode == 0
    assert _relay(routed.stack, "routing", "region-set", "mistral", "eu-central").stdout.split() == [
        "PROVIDER", "REGION", "mistral", "eu-central"]  # fmt: skip


def test_a_virtual_model_is_a_name_every_model_endpoint_knows(routed: Routed) -> None:
    """Listed and retrievable on both doors, countable, and served on the Responses door."""
    assert routed.put_vm("listed", {"strategy": "priority", "targets": [{"model": MINI}, {"model": LLAMA}]}).status_code == 200
    client = routed.openai()

    def listed() -> bool:
        return "listed" in {m.id for m in client.models.list()}

    wait_for(listed, "the virtual model in GET /v1/models")
    assert client.models.retrieve("listed").id == "listed"
    claude = routed.anthropic()
    assert "listed" in {m.id for m in claude.models.list()}
    assert claude.models.retrieve("listed").id == "listed"

    counted = claude.messages.count_tokens(model="listed", messages=MESSAGES)
    assert counted.input_tokens > 0

    response = client.responses.create(model="listed", input="Tell me about gateways.")
    assert response.output_text

    routed.admin.delete("/v1/routing/virtual-models/listed")
    wait_for(lambda: not listed(), "the deleted virtual model gone from GET /v1/models")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("listed")
