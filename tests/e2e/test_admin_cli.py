"""The operator commands (`relay tenants …`, `relay keys …`) and grpcurl
against a running server: real processes, the admin token from the
environment, JSON for scripts and tables for people."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.admin_helpers import wait_for
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _relay(relay: RelayStack, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELAY_GRPC_ADDR": relay.grpc_addr, "RELAY_ADMIN_TOKEN": token if token is not None else relay.admin_token}
    return subprocess.run([sys.executable, "-m", "relay_server", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)


def _json(relay: RelayStack, *args: str) -> dict[str, Any]:
    result = _relay(relay, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tenant_and_key_commands(relay: RelayStack) -> None:
    created = _json(relay, "tenants", "create", "--slug", "cli-co", "--name", "CLI Co", "--owner-email", "ops@cli.test")
    tid = created["tenant"]["id"]
    assert created["tenant"]["status"] == "TENANT_STATUS_PROVISIONING" and created["first_api_key_secret"].startswith("rly_test_sk_")
    wait_for(lambda: _json(relay, "tenants", "get", tid)["tenant"]["status"] == "TENANT_STATUS_TRIAL", "trial")
    assert tid in [t["id"] for t in _json(relay, "tenants", "list", "--status", "trial")["tenants"]]
    assert _json(relay, "tenants", "transition", tid, "active", "--reason", "paid")["tenant"]["status"] == "TENANT_STATUS_ACTIVE"

    key = _json(relay, "keys", "create", "--tenant", tid, "--name", "ops", "--env", "test", "--end-user", "u1",
                "--models", "gpt-4o-mini", "--spend-cap", "5", "--spend-window", "daily")  # fmt: skip
    kid = key["api_key"]["id"]
    assert key["secret"].startswith("rly_test_sk_") and key["api_key"]["allowed_models"] == ["gpt-4o-mini"]
    assert key["api_key"]["spend_cap"] == {"amount_usd": "5.00", "window": "SPEND_CAP_WINDOW_DAILY"}
    assert [k["id"] for k in _json(relay, "keys", "list", "--tenant", tid, "--end-user", "u1")["api_keys"]] == [kid]
    rotated = _json(relay, "keys", "rotate", "--tenant", tid, kid, "--grace-seconds", "60")
    assert rotated["secret"] and rotated["old_secret_expire_time"]
    assert _json(relay, "keys", "revoke", "--tenant", tid, kid)["api_key"]["status"] == "KEY_STATUS_REVOKED"
    assert _json(relay, "keys", "get", "--tenant", tid, kid)["api_key"]["rotated_to_key_id"] == rotated["api_key"]["id"]

    table = _relay(relay, "keys", "list", "--tenant", tid)
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "KEY", "ENV", "SCOPE", "STATUS", "END", "USER", "LAST", "USED"]
    assert any(kid in row and "revoked" in row for row in rows)


def test_command_failures_are_reported_with_the_servers_error(relay: RelayStack) -> None:
    missing = _relay(relay, "tenants", "get", "ten_nope")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    scripted = _relay(relay, "tenants", "get", "ten_nope", "--json")
    assert scripted.returncode == 1 and json.loads(scripted.stderr)["error"]["code"] == "not_found"
    denied = _relay(relay, "tenants", "list", token="wrong-token")
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    assert _relay(relay, "tenants", "list", token="").returncode == 2


def test_grpcurl_can_call_the_admin_api(relay: RelayStack) -> None:
    grpcurl = Path(sys.executable).with_name("grpcurl")
    if not grpcurl.exists():
        pytest.skip("grpcurl is not installed in this environment")
    created = _json(relay, "tenants", "create", "--slug", "grpcurl-co", "--name", "G", "--owner-email", "g@g.test")
    result = subprocess.run(
        [str(grpcurl), "-plaintext", "-H", f"authorization: Bearer {relay.admin_token}",
         "-d", json.dumps({"tenant_id": created["tenant"]["id"]}), relay.grpc_addr, "relay.admin.v1.TenantService/GetTenant"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tenant"]["slug"] == "grpcurl-co"


def test_create_then_key_right_away_with_the_cli_wait_and_the_sdk(relay: RelayStack) -> None:
    """`tenants create --wait` returns a tenant that can have keys; the SDK's create_api_key
    right after create_tenant waits out provisioning instead of failing."""
    created = _json(relay, "tenants", "create", "--slug", "cli-wait", "--name", "W", "--owner-email", "w@w.test", "--wait")
    assert created["tenant"]["status"] == "TENANT_STATUS_TRIAL"
    key = _json(relay, "keys", "create", "--tenant", created["tenant"]["id"], "--name", "first", "--env", "test")
    assert key["secret"].startswith("rly_test_sk_")

    import relay_sdk

    with relay_sdk.Relay(relay.grpc_addr, admin_token=relay.admin_token, timeout=30) as client:
        tenant = client.tenants.create_tenant(slug="sdk-wait", name="S", owner_email="s@s.test").tenant
        assert tenant.status == 1  # PROVISIONING: the call returned at once
        minted = client.api_keys.create_api_key(tenant_id=tenant.id, api_key={"name": "first", "environment": 2})
        assert minted.secret.startswith("rly_test_sk_")


def test_guardrails_command_sets_validates_shows_and_clears(relay: RelayStack) -> None:
    tid = _json(relay, "tenants", "create", "--slug", "cli-guard", "--name", "Guard Co", "--owner-email", "g@cli.test")["tenant"]["id"]
    policy = '{"pii": {"email": "redact"}, "injection": "block"}'
    assert _relay(relay, "tenants", "guardrails", tid, "--set", policy).returncode == 0
    shown = _relay(relay, "tenants", "guardrails", tid)
    assert shown.returncode == 0 and json.loads(shown.stdout) == json.loads(policy)
    refused = _relay(relay, "tenants", "guardrails", tid, "--set", '{"pii": {"email": "shout"}}')
    assert refused.returncode != 0 and "block, redact or flag" in refused.stderr + refused.stdout
    assert _relay(relay, "tenants", "guardrails", tid, "--clear").returncode == 0
    assert json.loads(_relay(relay, "tenants", "guardrails", tid).stdout) == {}


def test_providers_and_plans_commands_change_and_restore(relay: RelayStack) -> None:
    # The session's shared stack: every change is undone, so other tests see the seeded values.
    table = _relay(relay, "providers", "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "API", "STATUS", "PRIORITY", "REGION", "CIRCUIT", "BASE", "URL"]
    assert any(row.split()[:5] == ["mistral", "Mistral", "mistral", "active", "30"] for row in rows)
    try:
        changed = _json(relay, "providers", "update", "mistral", "--priority", "31", "--status", "disabled", "--region", "eu-west")
        assert (changed["provider"]["priority"], changed["provider"]["status"], changed["provider"]["region"]) == (31, "disabled", "eu-west")
        assert _json(relay, "providers", "update", "mistral", "--status", "active")["provider"]["status"] == "active"
    finally:
        restored = _json(relay, "providers", "update", "mistral", "--priority", "30", "--status", "active", "--region", "")
    assert (restored["provider"]["priority"], restored["provider"].get("region", "")) == (30, "")

    plans = _relay(relay, "plans", "list")
    assert plans.returncode == 0 and plans.stdout.splitlines()[0].split() == ["PLAN", "QUOTAS", "FEATURES", "MODELS"]
    assert any(line.startswith("enterprise") and "requests_per_day=unlimited" in line for line in plans.stdout.splitlines())
    try:
        plan = _json(relay, "plans", "update", "enterprise", "--quota", "tpm=10000001", "--feature", "sso=off",
                     "--models", "gpt-4o-mini, gpt-4o")["plan"]  # fmt: skip
        assert {q["resource"]: q["limit"] for q in plan["quotas"]}["tpm"] == "10000001"  # int64: a JSON string
        assert plan["features"]["sso"] is False and plan["allowed_models"] == ["gpt-4o", "gpt-4o-mini"]
    finally:
        restored_plan = _json(relay, "plans", "update", "enterprise", "--quota", "tpm=10000000", "--feature", "sso=on", "--all-models")
    assert restored_plan["plan"].get("allowed_models", []) == [] and restored_plan["plan"]["features"]["sso"] is True
    refused = _relay(relay, "plans", "update", "gold", "--feature", "sso=on")
    assert refused.returncode == 1 and "NOT_FOUND" in refused.stderr and "Unknown plan `gold`" in refused.stderr
    bad = _relay(relay, "providers", "update", "mistral", "--base-url", "not a url")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr
