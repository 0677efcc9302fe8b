"""Tenancy end to end: REST admin API through Envoy, the openai SDK for
inference, native gRPC for per-worker checks — against `relay serve
--workers 2` with Redis, so purges must cross processes.

Signup → provisioning → trial → first key → inference; revocation on every
worker at once; rotation grace; suspension → 402; management keys and their
child keys; the audit trail; and bad input with precise errors that change
nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import psycopg
import pytest
from openai import OpenAI

from relay_proto.relay.admin.v1 import api_keys_pb2, api_keys_pb2_grpc, tenants_pb2, tenants_pb2_grpc
from relay_server.stack.redis import RedisHandle
from relay_server.tenancy import tokens
from relay_server.tenancy.rbac import SYSTEM_ROLES
from tests.e2e.admin_helpers import channels_on_every_worker, chat_request, chat_stub, error_of, rest, wait_for
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = pytest.mark.e2e

JWT_SECRET = "e2e-jwt-secret-" + "j" * 48


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    relay = start_stack(
        db, Path(tmp_path_factory.mktemp("relay-admin")), redis_url=redis_server.url, workers=2,
        extra_env={"RELAY_JWT_SECRET": JWT_SECRET, "RELAY_JOBS_POLL_S": "0.2"},
    )  # fmt: skip
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


@pytest.fixture(scope="module")
def admin(stack: RelayStack) -> Iterator[httpx.Client]:
    with rest(stack, stack.admin_token) as client:
        yield client


def _sdk(stack: RelayStack, key: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)


def _chat(stack: RelayStack, key: str) -> str:
    reply = _sdk(stack, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content or ""


def _signup(admin: httpx.Client, slug: str) -> dict[str, Any]:
    """Sign up and wait for provisioning; the response body plus the trial tenant."""
    r = admin.post("/v1/tenants", json={"slug": slug, "name": slug.title(), "owner_email": f"owner@{slug}.test",
                                        "first_key_environment": "KEY_ENVIRONMENT_TEST"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    tid = body["tenant"]["id"]
    body["tenant"] = wait_for(
        lambda: (t := admin.get(f"/v1/tenants/{tid}").json()["tenant"])["status"] == "TENANT_STATUS_TRIAL" and t, "trial"
    )
    return body


def _create_key(client: httpx.Client, tenant_id: str, **api_key: Any) -> dict[str, Any]:
    r = client.post("/v1/keys", json={"tenant_id": tenant_id, "api_key": {"environment": "KEY_ENVIRONMENT_TEST", **api_key}})
    assert r.status_code == 200, r.text
    return r.json()


def _count(stack: RelayStack, query: str, *params: Any) -> int:
    with psycopg.connect(stack.db.owner_dsn) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_signup_provisioning_trial_first_key_inference(stack: RelayStack, admin: httpx.Client) -> None:
    r = admin.post("/v1/tenants", json={"slug": "e2e-signup", "name": "Signup", "owner_email": "o@signup.test"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"]["status"] == "TENANT_STATUS_PROVISIONING"
    secret = body["first_api_key_secret"]
    assert secret.startswith("rly_test_sk_") and body["first_api_key_id"].startswith("key_")
    tenant = wait_for(lambda: (t := admin.get(f"/v1/tenants/{body['tenant']['id']}").json()["tenant"])["status"] == "TENANT_STATUS_TRIAL" and t, "trial")
    assert tenant["trial_end_time"] and tenant["slug"] == "e2e-signup"
    assert _chat(stack, secret)
    key = admin.get(f"/v1/keys/{body['first_api_key_id']}", params={"tenant_id": tenant["id"]}).json()["api_key"]
    assert (key["scope"], key["environment"], key["key_hint"]) == ("KEY_SCOPE_MANAGEMENT", "KEY_ENVIRONMENT_TEST", secret[-4:])


def test_revocation_fails_the_very_next_request_on_every_worker(stack: RelayStack, admin: httpx.Client) -> None:
    tenant = _signup(admin, "e2e-revoke")["tenant"]
    created = _create_key(admin, tenant["id"], name="to revoke")
    metadata = (("authorization", f"Bearer {created['secret']}"),)
    channels = channels_on_every_worker(stack)
    try:
        for channel in channels:  # every worker has now cached the key (in process and in Redis)
            assert chat_stub(channel).CreateChatCompletion(chat_request(), metadata=metadata).choices
        for _ in range(3):
            assert _chat(stack, created["secret"])
        r = admin.post(f"/v1/keys/{created['api_key']['id']}:revoke", json={"tenant_id": tenant["id"]})
        assert r.status_code == 200 and r.json()["api_key"]["status"] == "KEY_STATUS_REVOKED"
        for channel in channels:
            with pytest.raises(grpc.RpcError) as info:
                chat_stub(channel).CreateChatCompletion(chat_request(), metadata=metadata)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        for _ in range(4):
            with pytest.raises(openai.AuthenticationError) as err:
                _chat(stack, created["secret"])
            assert err.value.status_code == 401 and created["secret"] not in str(err.value.body)
    finally:
        for channel in channels:
            channel.close()


def test_rotation_keeps_the_old_secret_until_it_is_revoked_or_the_grace_ends(stack: RelayStack, admin: httpx.Client) -> None:
    tenant = _signup(admin, "e2e-rotate")["tenant"]
    old = _create_key(admin, tenant["id"], name="rotating")
    assert _chat(stack, old["secret"])
    r = admin.post(f"/v1/keys/{old['api_key']['id']}:rotate", json={"tenant_id": tenant["id"], "grace_period_seconds": 3600})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["secret"] != old["secret"] and rotated["old_secret_expire_time"]
    assert _chat(stack, old["secret"]) and _chat(stack, rotated["secret"])
    listed = admin.get(f"/v1/keys/{old['api_key']['id']}", params={"tenant_id": tenant["id"]}).json()["api_key"]
    assert listed["rotated_to_key_id"] == rotated["api_key"]["id"] and listed["grace_expire_time"]
    admin.post(f"/v1/keys/{old['api_key']['id']}:revoke", json={"tenant_id": tenant["id"]}).raise_for_status()
    with pytest.raises(openai.AuthenticationError):
        _chat(stack, old["secret"])
    assert _chat(stack, rotated["secret"])


def test_suspension_is_a_402_with_the_billing_message_and_reactivation_restores_access(stack: RelayStack, admin: httpx.Client) -> None:
    body = _signup(admin, "e2e-suspend")
    tid, secret = body["tenant"]["id"], body["first_api_key_secret"]
    assert _chat(stack, secret)
    for status in ("TENANT_STATUS_ACTIVE", "TENANT_STATUS_SUSPENDED"):
        r = admin.post(f"/v1/tenants/{tid}:transition", json={"status": status, "reason": "e2e"})
        assert r.status_code == 200 and r.json()["tenant"]["status"] == status
    with pytest.raises(openai.APIStatusError) as err:
        _chat(stack, secret)
    assert err.value.status_code == 402
    assert err.value.body["code"] == "tenant_suspended" and "billing" in err.value.body["message"]
    admin.post(f"/v1/tenants/{tid}:transition", json={"status": "TENANT_STATUS_ACTIVE"}).raise_for_status()
    assert _chat(stack, secret)


def test_a_management_key_mints_child_keys_and_cannot_reach_another_tenant(stack: RelayStack, admin: httpx.Client) -> None:
    acme, other = _signup(admin, "e2e-master"), _signup(admin, "e2e-other")
    with rest(stack, acme["first_api_key_secret"]) as master:
        r = master.post("/v1/keys", json={"api_key": {"name": "user_42", "end_user_id": "user_42",
                                                      "spend_cap": {"amount_usd": "10.00", "window": "SPEND_CAP_WINDOW_MONTHLY"}}})  # fmt: skip
        assert r.status_code == 200, r.text
        child = r.json()
        key = child["api_key"]
        assert (key["parent_key_id"], key["end_user_id"], key["environment"], key["scope"]) == (
            acme["first_api_key_id"], "user_42", "KEY_ENVIRONMENT_TEST", "KEY_SCOPE_INFERENCE",
        )  # fmt: skip
        assert key["spend_cap"] == {"amount_usd": "10.00", "window": "SPEND_CAP_WINDOW_MONTHLY"}
        assert _chat(stack, child["secret"])
        assert [k["id"] for k in master.get("/v1/keys").json()["api_keys"]] == [key["id"]]

        r = master.get(f"/v1/keys/{other['first_api_key_id']}")
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        r = master.get("/v1/keys", params={"tenant_id": other["tenant"]["id"]})
        assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
        r = master.post(f"/v1/keys/{other['first_api_key_id']}:revoke", json={"tenant_id": other["tenant"]["id"]})
        assert r.status_code == 403
        r = master.post("/v1/keys", json={"api_key": {"name": "live one", "environment": "KEY_ENVIRONMENT_LIVE"}})
        assert r.status_code == 403 and error_of(r)["param"] == "api_key.environment"
        r = master.get("/v1/tenants")
        assert r.status_code == 403
    assert _chat(stack, other["first_api_key_secret"])
    with rest(stack, child["secret"]) as inference_only:
        r = inference_only.get("/v1/keys")
        assert r.status_code == 403 and "management key" in error_of(r)["message"]


def test_every_admin_action_leaves_an_audit_row(stack: RelayStack, admin: httpx.Client) -> None:
    body = _signup(admin, "e2e-audit")
    tid = body["tenant"]["id"]
    key = _create_key(admin, tid, name="audited")["api_key"]
    admin.patch(f"/v1/keys/{key['id']}", params={"tenant_id": tid}, json={"name": "audited-2"}).raise_for_status()
    admin.post(f"/v1/keys/{key['id']}:rotate", json={"tenant_id": tid}).raise_for_status()
    admin.post(f"/v1/keys/{key['id']}:revoke", json={"tenant_id": tid}).raise_for_status()
    admin.patch(f"/v1/tenants/{tid}/config", json={"config": {"default_cache_ttl_sec": "120"}}).raise_for_status()
    admin.post(f"/v1/tenants/{tid}/members", json={"email": "dev@audit.test", "role": "developer"}).raise_for_status()
    admin.put(f"/v1/tenants/{tid}/features/byok", json={"enabled": True, "reason": "pilot"}).raise_for_status()
    admin.patch(f"/v1/tenants/{tid}", json={"plan": "pro"}).raise_for_status()
    admin.post(f"/v1/tenants/{tid}:transition", json={"status": "TENANT_STATUS_ACTIVE"}).raise_for_status()
    events = admin.get("/v1/audit-events", params={"tenant_id": tid, "page_size": 100}).json()["events"]
    actions = [e["action"] for e in events]
    for action in ("tenant.created", "tenant.status_changed", "api_key.created", "api_key.updated", "api_key.rotated",
                   "api_key.revoked", "tenant.config_updated", "member.added", "feature.override_set", "tenant.plan_changed"):  # fmt: skip
        assert action in actions, action
    assert actions[0] == "tenant.status_changed" and events[0]["metadata"]["to"] == "active"  # newest first
    # The address Envoy put in x-forwarded-for (for a loopback client Envoy names its host's address).
    mine = [e for e in events if e["actor_type"] == "platform_admin"]
    assert mine and all(ipaddress.ip_address(e["ip_address"]) for e in mine)
    page = admin.get("/v1/audit-events", params={"tenant_id": tid, "page_size": 2}).json()
    assert len(page["events"]) == 2 and page["next_page_token"]
    rest_page = admin.get("/v1/audit-events", params={"tenant_id": tid, "page_size": 100, "page_token": page["next_page_token"]}).json()
    assert [e["id"] for e in page["events"] + rest_page["events"]] == [e["id"] for e in events]


# --- bad input: precise errors, nothing changed -------------------------------------------------


def _jwt(tenant_id: str, user_id: str, role: str = "owner", **kw: Any) -> str:
    return tokens.issue(kw.pop("secret", JWT_SECRET), issuer="relay", user_id=user_id, tenant_id=tenant_id, tenant_slug="x",
                        role=role, permissions=SYSTEM_ROLES[role], **kw)  # fmt: skip


def test_unknown_tenant_and_illegal_transition(stack: RelayStack, admin: httpx.Client) -> None:
    r = admin.get("/v1/tenants/ten_does_not_exist")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    tenant = _signup(admin, "e2e-illegal")["tenant"]
    audits = _count(stack, "SELECT count(*) FROM audit_log WHERE tenant_id = %s", tenant["id"])
    r = admin.post(f"/v1/tenants/{tenant['id']}:transition", json={"status": "TENANT_STATUS_SUSPENDED"})
    assert r.status_code == 409 and error_of(r)["code"] == "invalid_status_transition"
    assert admin.get(f"/v1/tenants/{tenant['id']}").json()["tenant"]["status"] == "TENANT_STATUS_TRIAL"
    assert _count(stack, "SELECT count(*) FROM audit_log WHERE tenant_id = %s", tenant["id"]) == audits
    with grpc.insecure_channel(stack.grpc_addr) as channel:
        stub = tenants_pb2_grpc.TenantServiceStub(channel)
        md = (("authorization", f"Bearer {stack.admin_token}"),)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetTenant(tenants_pb2.GetTenantRequest(tenant_id="ten_does_not_exist"), metadata=md)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.TransitionTenant(tenants_pb2.TransitionTenantRequest(tenant_id=tenant["id"], status=tenants_pb2.TENANT_STATUS_SUSPENDED), metadata=md)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION and dict(info.value.trailing_metadata())["x-relay-http-status"] == "409"


def test_malformed_and_expired_keys(stack: RelayStack, admin: httpx.Client) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        _chat(stack, "rly_live_sk_short")
    assert err.value.body["code"] == "invalid_api_key"
    tenant = _signup(admin, "e2e-expiry")["tenant"]
    created = _create_key(admin, tenant["id"], name="expiring")
    with psycopg.connect(stack.db.owner_dsn) as conn:
        conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s", (created["api_key"]["id"],))
    with pytest.raises(openai.AuthenticationError) as err:
        _chat(stack, created["secret"])
    assert "expired" in err.value.body["message"]
    key = admin.get(f"/v1/keys/{created['api_key']['id']}", params={"tenant_id": tenant["id"]}).json()["api_key"]
    assert key["status"] == "KEY_STATUS_EXPIRED"


def test_dashboard_tokens_wrong_signature_expired_or_missing_permission(stack: RelayStack, admin: httpx.Client) -> None:
    body = _signup(admin, "e2e-jwt")
    tid, owner = body["tenant"]["id"], body["owner_user_id"]
    viewer = admin.post(f"/v1/tenants/{tid}/members", json={"email": "v@jwt.test", "role": "viewer"}).json()["member"]
    keys_before = _count(stack, "SELECT count(*) FROM api_keys WHERE tenant_id = %s", tid)
    cases = [
        (_jwt(tid, owner, secret="w" * 64), 401, "invalid_token", grpc.StatusCode.UNAUTHENTICATED),
        (_jwt(tid, owner, now=1_000_000, ttl_s=60), 401, "token_expired", grpc.StatusCode.UNAUTHENTICATED),
        (_jwt(tid, viewer["user_id"], "viewer"), 403, "permission_denied", grpc.StatusCode.PERMISSION_DENIED),
    ]
    with grpc.insecure_channel(stack.grpc_addr) as channel:
        stub = api_keys_pb2_grpc.ApiKeyServiceStub(channel)
        for token, status, code, grpc_code in cases:
            with rest(stack, token) as client:
                r = client.post("/v1/keys", json={"api_key": {"name": "nope"}})
            assert (r.status_code, error_of(r)["code"]) == (status, code), r.text
            with pytest.raises(grpc.RpcError) as info:
                stub.CreateApiKey(api_keys_pb2.CreateApiKeyRequest(api_key=api_keys_pb2.ApiKey(name="nope")),
                                  metadata=(("authorization", f"Bearer {token}"),))  # fmt: skip
            assert info.value.code() is grpc_code
    assert _count(stack, "SELECT count(*) FROM api_keys WHERE tenant_id = %s", tid) == keys_before
    # The owner's valid token works, on its own tenant only.
    with rest(stack, _jwt(tid, owner)) as client:
        r = client.post("/v1/keys", json={"api_key": {"name": "by owner", "environment": "KEY_ENVIRONMENT_TEST"}})
        assert r.status_code == 200 and r.json()["api_key"]["created_by"] == owner
        assert client.get("/v1/tenants/ten_someone_else").status_code == 403


def test_bad_key_requests_over_rest(stack: RelayStack, admin: httpx.Client) -> None:
    tenant = _signup(admin, "e2e-badkeys")["tenant"]
    before = _count(stack, "SELECT count(*) FROM api_keys WHERE tenant_id = %s", tenant["id"])
    for api_key, param in (
        ({"name": ""}, "api_key.name"),
        ({"name": "x", "allowed_models": ["nope-model"]}, "api_key.allowed_models"),
        ({"name": "x", "spend_cap": {"amount_usd": "lots", "window": "SPEND_CAP_WINDOW_DAILY"}}, "api_key.spend_cap.amount_usd"),
    ):
        r = admin.post("/v1/keys", json={"tenant_id": tenant["id"], "api_key": api_key})
        assert r.status_code == 400 and error_of(r)["param"] == param, r.text
    r = admin.post("/v1/keys", json={"api_key": {"name": "x"}})  # operators must name the tenant
    assert r.status_code == 400 and error_of(r)["param"] == "tenant_id"
    assert _count(stack, "SELECT count(*) FROM api_keys WHERE tenant_id = %s", tenant["id"]) == before
