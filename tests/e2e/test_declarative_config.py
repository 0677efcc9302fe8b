"""`relay apply -f` / `relay diff -f` against a running Relay: real processes, the
admin API with the operator token, secrets from the environment and never printed."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from relay_proto.relay.admin.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
)
from relay_server.stack.redis import RedisHandle
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OPENAI_SECRET = "sk-apply-" + secrets.token_hex(16) + "AAAA"
ROTATED_SECRET = "sk-apply-" + secrets.token_hex(16) + "BBBB"


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    master = base64.b64encode(secrets.token_bytes(32)).decode()  # provider credentials are sealed under it
    relay = start_stack(db, Path(tmp_path_factory.mktemp("relay-apply")), redis_url=redis_server.url,
                        extra_env={"RELAY_MASTER_KEY": master, "RELAY_HEALTH_MONITOR": "false"})  # fmt: skip
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


def relay_cli(stack: RelayStack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RELAY_GRPC_ADDR": stack.grpc_addr, "RELAY_ADMIN_TOKEN": stack.admin_token, **env}
    return subprocess.run([sys.executable, "-m", "relay_server", *args], env=environment, capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # fmt: skip


CONFIG = """
providers:
  openai:
    credentials:
    - name: pooled-apply
      secret: ${APPLY_OPENAI_KEY}
      priority: 5
models:
  apply-chat:
    provider: openai
    provider_name: gpt-4o-mini
    input_cost_per_1m: "0.15"
    output_cost_per_1m: 0.6
    context_window: 128000
    aliases: [apply-mini, apply-small]
    routes:
    - provider: test
      priority: 90
tenants:
  apply-co:
    name: Apply Co
    owner_email: ops@apply.test
    plan: pro
    metadata: {team: platform}
    config:
      spend_cap_usd: "25"
      spend_cap_window: monthly
    features:
      byok: true
"""


def _meta(stack: RelayStack) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {stack.admin_token}"),)


def test_apply_creates_then_a_second_apply_and_diff_change_nothing(stack: RelayStack, tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG)
    env = {"APPLY_OPENAI_KEY": OPENAI_SECRET}

    before = relay_cli(stack, "diff", "-f", str(path), **env)
    assert before.returncode == 1, before.stderr
    assert "+ credential openai/pooled-apply" in before.stdout and "+ model apply-chat" in before.stdout
    assert "+ tenant apply-co" in before.stdout

    applied = relay_cli(stack, "apply", "-f", str(path), **env)
    assert applied.returncode == 0, applied.stderr
    assert "3 change(s) applied" in applied.stdout

    again = relay_cli(stack, "apply", "-f", str(path), **env)
    assert (again.returncode, again.stdout.strip()) == (0, "no changes"), again.stdout + again.stderr
    after = relay_cli(stack, "diff", "-f", str(path), **env)
    assert (after.returncode, after.stdout) == (0, ""), after.stdout + after.stderr
    for result in (before, applied, again, after):
        assert OPENAI_SECRET not in result.stdout + result.stderr
        assert OPENAI_SECRET[-8:] not in result.stdout + result.stderr

    # What the admin API now reports is what the file says.
    with grpc.insecure_channel(stack.grpc_addr) as channel:
        models = catalog_pb2_grpc.ModelCatalogServiceStub(channel).ListCatalogModels(
            catalog_pb2.ListCatalogModelsRequest(page_size=500), metadata=_meta(stack), timeout=30).models  # fmt: skip
        model = next(m for m in models if m.relay_name == "apply-chat")
        assert (model.provider_id, sorted(model.aliases)) == ("openai", ["apply-mini", "apply-small"])
        assert float(model.output_cost_per_1m) == 0.6 and [r.provider_id for r in model.routes] == ["test"]
        creds = credentials_pb2_grpc.ProviderCredentialServiceStub(channel).ListProviderCredentials(
            credentials_pb2.ListProviderCredentialsRequest(page_size=100), metadata=_meta(stack), timeout=30).credentials  # fmt: skip
        cred = next(c for c in creds if c.name == "pooled-apply")
        assert (cred.key_hint, cred.priority, cred.status) == ("AAAA", 5, "active")
        tenant_stub = tenants_pb2_grpc.TenantServiceStub(channel)
        tenant = next(t for t in tenant_stub.ListTenants(tenants_pb2.ListTenantsRequest(page_size=100), metadata=_meta(stack),
                                                         timeout=30).tenants if t.slug == "apply-co")  # fmt: skip
        assert (tenant.plan, dict(tenant.metadata)) == ("pro", {"team": "platform"})
        config = tenant_stub.GetTenantConfig(tenants_pb2.GetTenantConfigRequest(tenant_id=tenant.id), metadata=_meta(stack), timeout=30)
        assert config.config["spend_cap_window"] == "monthly" and float(config.config["spend_cap_usd"]) == 25
        features = tenant_stub.ListTenantFeatures(tenants_pb2.ListTenantFeaturesRequest(tenant_id=tenant.id),
                                                  metadata=_meta(stack), timeout=30).features  # fmt: skip
        assert {f.feature: f.enabled for f in features}["byok"] is True

    # A changed file: diff names exactly the differences (exit 1), apply makes them, and converges.
    changed = (CONFIG.replace('input_cost_per_1m: "0.15"', 'input_cost_per_1m: "0.20"').replace("plan: pro", "plan: enterprise")
               .replace('spend_cap_usd: "25"', 'spend_cap_usd: "40"'))  # fmt: skip
    path.write_text(changed)
    rotated = {"APPLY_OPENAI_KEY": ROTATED_SECRET}
    diff = relay_cli(stack, "diff", "-f", str(path), **rotated)
    assert diff.returncode == 1, diff.stderr
    assert "~ model apply-chat" in diff.stdout and "input_cost_per_1m" in diff.stdout and "0.20" in diff.stdout
    assert "~ credential openai/pooled-apply" in diff.stdout and "secret rotated" in diff.stdout
    assert "plan: 'pro' -> 'enterprise'" in diff.stdout and "config.spend_cap_usd" in diff.stdout
    assert "output_cost_per_1m" not in diff.stdout and "aliases" not in diff.stdout
    assert ROTATED_SECRET not in diff.stdout + diff.stderr and OPENAI_SECRET not in diff.stdout + diff.stderr
    assert relay_cli(stack, "apply", "-f", str(path), **rotated).returncode == 0
    final = relay_cli(stack, "diff", "-f", str(path), **rotated)
    assert (final.returncode, final.stdout) == (0, ""), final.stdout + final.stderr
    with grpc.insecure_channel(stack.grpc_addr) as channel:
        creds = credentials_pb2_grpc.ProviderCredentialServiceStub(channel).ListProviderCredentials(
            credentials_pb2.ListProviderCredentialsRequest(page_size=100), metadata=_meta(stack), timeout=30).credentials  # fmt: skip
        assert [c.key_hint for c in creds if c.name == "pooled-apply" and c.status == "active"] == ["BBBB"]


def test_bad_files_and_missing_secrets_fail_cleanly_without_changing_anything(stack: RelayStack, tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG.replace("apply-co", "never-co").replace("apply-chat", "never-chat"))
    missing = relay_cli(stack, "apply", "-f", str(path))
    assert missing.returncode == 2 and "APPLY_OPENAI_KEY is not set" in missing.stderr

    path.write_text("providers:\n  openai:\n    credentials:\n    - name: x\n      secret: sk-plain-text-secret\n")
    plain = relay_cli(stack, "apply", "-f", str(path))
    assert plain.returncode == 2 and "${ENV_VAR} reference" in plain.stderr
    assert "sk-plain-text-secret" not in plain.stderr + plain.stdout

    path.write_text("models:\n  never-chat:\n    provider: openai\n    input_cost: 1\n")
    unknown = relay_cli(stack, "diff", "-f", str(path))
    assert unknown.returncode == 2 and "unknown key(s) input_cost" in unknown.stderr

    path.write_text("tenants:\n  never-co:\n    name: N\n    owner_email: n@n.test\n    config: {spend_cap_window: fortnightly}\n")
    invalid = relay_cli(stack, "diff", "-f", str(path))
    assert invalid.returncode == 2 and "tenants.never-co.config.spend_cap_window" in invalid.stderr

    # The server refuses a change (an unknown provider for a model): exit 2 with its reason.
    path.write_text("models:\n  never-chat:\n    provider: nope\n    input_cost_per_1m: 1\n    output_cost_per_1m: 1\n"
                    "    context_window: 10\n")  # fmt: skip
    refused = relay_cli(stack, "apply", "-f", str(path))
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr, refused.stderr

    denied = relay_cli(stack, "diff", "-f", str(path), RELAY_ADMIN_TOKEN="wrong")
    assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr

    with grpc.insecure_channel(stack.grpc_addr) as channel:
        tenants = tenants_pb2_grpc.TenantServiceStub(channel).ListTenants(
            tenants_pb2.ListTenantsRequest(page_size=100), metadata=_meta(stack), timeout=30).tenants  # fmt: skip
    assert "never-co" not in {t.slug for t in tenants}


PLATFORM = """
providers:
  groq:
    priority: 7
    status: disabled
    region: eu-west
  mistral:
    base_url: http://127.0.0.1:9/v1
plans:
  starter:
    quotas: {rpm: 450, requests_per_day: unlimited, tpm: null}
    features: {webhooks: false, semantic_cache: true}
    allowed_models: [gpt-4o-mini, claude-3-5-haiku]
"""


def test_provider_settings_and_plans_converge(stack: RelayStack, tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(PLATFORM)
    before = relay_cli(stack, "diff", "-f", str(path))
    assert before.returncode == 1, before.stderr
    assert "~ provider groq" in before.stdout and "priority: 40 -> 7" in before.stdout and "status: 'active' -> 'disabled'" in before.stdout
    assert "~ provider mistral" in before.stdout and "base_url: 'https://api.mistral.ai/v1' -> 'http://127.0.0.1:9/v1'" in before.stdout
    assert "~ plan starter" in before.stdout and "quotas.rpm: 500 -> 450" in before.stdout
    assert "quotas.tpm: 400000 -> (no quota)" in before.stdout and "quotas.requests_per_day: 50000 -> unlimited" in before.stdout
    assert "features.webhooks: True -> False" in before.stdout and "features.semantic_cache: False -> True" in before.stdout
    assert "allowed_models: (every model) -> ['claude-3-5-haiku-20241022', 'gpt-4o-mini']" in before.stdout

    applied = relay_cli(stack, "apply", "-f", str(path))
    assert applied.returncode == 0 and "3 change(s) applied" in applied.stdout, applied.stdout + applied.stderr
    again = relay_cli(stack, "apply", "-f", str(path))
    assert (again.returncode, again.stdout.strip()) == (0, "no changes"), again.stdout + again.stderr
    after = relay_cli(stack, "diff", "-f", str(path))
    assert (after.returncode, after.stdout) == (0, ""), after.stdout + after.stderr

    with grpc.insecure_channel(stack.grpc_addr) as channel:
        providers = {p.id: p for p in catalog_pb2_grpc.ModelCatalogServiceStub(channel).ListProviders(
            catalog_pb2.ListProvidersRequest(), metadata=_meta(stack), timeout=30).providers}  # fmt: skip
        assert (providers["groq"].priority, providers["groq"].status, providers["groq"].region) == (7, "disabled", "eu-west")
        assert providers["mistral"].base_url == "http://127.0.0.1:9/v1" and providers["mistral"].priority == 30
        plans = {p.name: p for p in plans_pb2_grpc.PlanServiceStub(channel).ListPlans(
            plans_pb2.ListPlansRequest(), metadata=_meta(stack), timeout=30).plans}  # fmt: skip
        assert {q.resource: q.limit for q in plans["starter"].quotas} == {"rpm": 450, "requests_per_day": -1}
        assert plans["starter"].features["semantic_cache"] and not plans["starter"].features["webhooks"]
        assert list(plans["starter"].allowed_models) == ["claude-3-5-haiku-20241022", "gpt-4o-mini"]

    # Enabling again is one change, and so is lifting the model restriction (an empty list: every model);
    # an unknown feature or provider is refused before anything changes.
    path.write_text(PLATFORM.replace("status: disabled", "status: active").replace("[gpt-4o-mini, claude-3-5-haiku]", "[]"))
    enable = relay_cli(stack, "apply", "-f", str(path))
    assert enable.returncode == 0 and "2 change(s) applied" in enable.stdout, enable.stdout + enable.stderr
    assert "allowed_models: ['claude-3-5-haiku-20241022', 'gpt-4o-mini'] -> (every model)" in enable.stdout
    path.write_text(PLATFORM.replace("webhooks: false", "teleport: true"))
    unknown = relay_cli(stack, "diff", "-f", str(path))
    assert unknown.returncode == 2 and "plans.starter.features: unknown feature(s) teleport" in unknown.stderr
    path.write_text("providers:\n  nope:\n    priority: 1\n")
    missing = relay_cli(stack, "diff", "-f", str(path))
    assert missing.returncode == 2 and "providers.nope: no such provider" in missing.stderr


def test_the_example_file_parses_with_its_secrets_from_the_environment() -> None:
    from relay_server.declarative.spec import load

    desired = load(REPO / "deploy" / "relay.yaml", {"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"})
    assert {c.provider_id for c in desired.credentials} == {"openai", "anthropic"}
    assert "sk-a" not in repr(desired)
    assert {m.relay_name for m in desired.models} == {"gpt-4o-mini", "claude-sonnet"}
    assert [t.slug for t in desired.tenants] == ["acme"]
    assert {p.provider_id: p.values for p in desired.providers} == {"openai": {"priority": 10}, "mistral": {"status": "disabled"}}
    assert [(p.name, p.quotas["rpm"]) for p in desired.plans] == [("starter", 600)]
