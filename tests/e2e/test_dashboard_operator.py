"""The console's operator side, end to end: a provider's circuit opened by a failing (fake)
upstream is listed by ListProviderEvents and on the provider events page; an operator's
tenant transition from the console is audited as that operator (and a forged acting-operator
header is refused); password changes through invitation and reset links are audited.

Its own stack: a live key routed to a fake OpenAI on loopback (Relay's pooled key created
through the REST admin API), no health monitor (its probes would consume the faults).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
import redis

from relay_server.stack.redis import RedisHandle
from relay_server.storage.redis.health import circuit_key
from relay_server.tenancy.rbac import ACTING_OPERATOR_HEADER
from tests.e2e.admin_helpers import rest, wait_for
from tests.e2e.dashboard_support import PASSWORD, ConsoleWatch, artifacts_dir, browser, chromium_path, relay_cli, shoot
from tests.fakes import FakeOpenAI, Fault
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.skipif(chromium_path() is None, reason="chromium missing: `make test` installs it"),
]


class FakeUpstream:
    """A fake OpenAI on its own event loop in a background thread (the SDK calls are blocking)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-openai", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.fake: Any = None

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _open(self) -> None:
        self.fake = await self._stack.enter_async_context(FakeOpenAI())

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        self.run(self._open())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as host:
        yield host


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, upstream: FakeUpstream,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:  # fmt: skip
    db = pg_cluster.create_database()
    relay: RelayStack | None = None
    try:
        with psycopg.connect(db.owner_dsn) as conn:  # before the server loads its provider directory
            conn.execute("UPDATE providers SET base_url = %s WHERE id = 'openai'", (upstream.fake.base_url,))
        relay = start_stack(
            db, Path(tmp_path_factory.mktemp("relay-dashboard-operator")), redis_url=redis_server.url,
            extra_env={"RELAY_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(), "RELAY_HEALTH_MONITOR": "false",
                       "RELAY_CIRCUIT_FAILURE_THRESHOLD": "2", "RELAY_CIRCUIT_COOLDOWN_S": "600",
                       "RELAY_JOBS_POLL_S": "0.2"},
        )  # fmt: skip
        with rest(relay, relay.admin_token) as admin:
            body = {"credential": {"provider_id": "openai", "name": "openai-pooled", "priority": 1}, "secret": "sk-pooled-1111"}
            assert (r := admin.post("/v1/provider-credentials", json=body)).status_code == 200, r.text
        yield relay
    finally:
        if relay is not None:
            relay.stop()
        pg_cluster.drop_database(db)


def _url(stack: RelayStack, path: str) -> str:
    return f"http://127.0.0.1:{stack.http_port}/dashboard{path}"


def _sign_in(page: Any, stack: RelayStack, email: str) -> None:
    page.goto(_url(stack, "/signin"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def _set_password(page: Any, link: str) -> None:
    page.goto(link)
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("Repeat it").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    page.wait_for_url(re.compile(r"/dashboard/signin$"))


def _tenant(stack: RelayStack, slug: str, owner: str) -> str:
    with rest(stack, stack.admin_token) as admin:
        r = admin.post("/v1/tenants", json={"slug": slug, "name": slug.title(), "owner_email": owner})
        assert r.status_code == 200, r.text
        tid = r.json()["tenant"]["id"]
        wait_for(lambda: admin.get(f"/v1/tenants/{tid}").json()["tenant"]["status"] == "TENANT_STATUS_TRIAL", "trial")
        return str(tid)


def _audit(stack: RelayStack, tenant_id: str, action: str) -> list[dict[str, Any]]:
    with rest(stack, stack.admin_token) as admin:
        r = admin.get("/v1/audit-events", params={"tenant_id": tenant_id, "action": action})
        assert r.status_code == 200, r.text
        return list(r.json().get("events", []))


@pytest.fixture
def closed_openai_circuit(stack: RelayStack) -> Iterator[None]:
    """The session's Redis is shared with other tests' breakers: start from a closed circuit with no
    failures, and leave one behind, so later tests routing to openai are not refused by this one's."""
    with redis.Redis.from_url(stack.redis_url) as shared:
        shared.delete(circuit_key("openai"))
        try:
            yield
        finally:
            shared.delete(circuit_key("openai"))


def test_an_open_circuit_is_listed_through_the_api_and_on_the_page(
    stack: RelayStack, upstream: FakeUpstream, tmp_path: Path, closed_openai_circuit: None
) -> None:
    with rest(stack, stack.admin_token) as admin:
        minted = admin.post("/v1/keys", json={"tenant_id": "ten_demo", "api_key": {
            "name": "circuit e2e", "environment": "KEY_ENVIRONMENT_LIVE", "scope": "KEY_SCOPE_INFERENCE"}})  # fmt: skip
        assert minted.status_code == 200, minted.text
    client = openai.OpenAI(base_url=stack.base_url, api_key=minted.json()["secret"], max_retries=0, timeout=30)
    upstream.fake.inject(*[Fault(status=500)] * 20)
    for _ in range(3):  # every attempt fails: the second failure opens the circuit, the rest are refused
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    with rest(stack, stack.admin_token) as admin:
        def opened() -> list[dict[str, Any]]:
            r = admin.get("/v1/catalog/provider-events", params={"provider_id": "openai", "kind": "circuit_opened"})
            assert r.status_code == 200, r.text
            return list(r.json().get("events", []))

        [event] = wait_for(opened, "the circuit_opened event", timeout=20)
        assert event["provider_id"] == "openai" and event["message"] == "2 consecutive failures", event
        circuit = {p["id"]: p["circuit_state"] for p in admin.get("/v1/catalog/providers").json()["providers"]}
        assert circuit["openai"] == "open"
        bad = admin.get("/v1/catalog/provider-events", params={"kind": "meltdown"})
        assert bad.status_code == 400 and "kind" in bad.text
        later = admin.get("/v1/catalog/provider-events", params={"start_time": "2099-01-01T00:00:00Z"})
        assert later.status_code == 200 and not later.json().get("events")
    with rest(stack, stack.test_key) as tenant_key:  # provider health is for operators only
        assert tenant_key.get("/v1/catalog/provider-events").status_code in (401, 403)

    relay_cli(stack, "create-operator", "--email", "circuit-op@relay.test", "--password-stdin", stdin=PASSWORD + "\n")
    watch = ConsoleWatch()
    with browser() as b:
        op = watch.attach(b.new_context(viewport={"width": 1280, "height": 800}).new_page())
        _sign_in(op, stack, "circuit-op@relay.test")
        op.goto(_url(stack, "/operator/providers"))
        op.locator("#providers tr[data-provider-id='openai']").get_by_role("link", name=re.compile("^Events of ")).click()
        op.wait_for_url(re.compile(r"/operator/provider-events\?provider_id=openai$"))
        row = op.locator("#provider-events tr[data-kind='circuit_opened'][data-provider-id='openai']")
        assert row.count() == 1 and "2 consecutive failures" in row.inner_text()
        op.get_by_label("Kind").select_option("anomaly")
        op.get_by_role("button", name="Show").click()
        op.wait_for_load_state()
        assert op.locator("#provider-events tbody tr[data-kind]").count() == 0
        shots = shoot(op, artifacts_dir(tmp_path), "operator-provider-events")
    assert all(p.stat().st_size > 1000 for p in shots)
    assert watch.errors == []


def test_operator_actions_and_password_changes_are_audited_as_the_person(stack: RelayStack) -> None:
    tid = _tenant(stack, "audited", "owner@audited.test")
    relay_cli(stack, "create-operator", "--email", "ops@relay.test", "--password-stdin", stdin=PASSWORD + "\n")
    invite = relay_cli(stack, "invite-link", "--email", "owner@audited.test", "--base-url", f"http://127.0.0.1:{stack.http_port}")
    watch = ConsoleWatch()
    with browser() as b:
        owner = watch.attach(b.new_context().new_page())
        _set_password(owner, invite)
        [password_set] = _audit(stack, tid, "dashboard.password_set")
        assert (password_set["actor_type"], password_set["resource_id"]) == ("user", "owner@audited.test")
        assert PASSWORD not in str(password_set) and "token" not in str(password_set.get("metadata", {}))
        reset = relay_cli(stack, "reset-link", "--email", "owner@audited.test", "--base-url", f"http://127.0.0.1:{stack.http_port}")
        _set_password(owner, reset)
        [password_reset] = _audit(stack, tid, "dashboard.password_reset")
        assert password_reset["actor_type"] == "user" and password_reset["ip_address"]

        op = watch.attach(b.new_context().new_page())
        _sign_in(op, stack, "ops@relay.test")
        op.goto(_url(stack, "/operator/tenants?q=audited"))
        row = op.locator(f"tr[data-tenant-id='{tid}']")
        row.get_by_label("New status of Audited").select_option("active")
        row.get_by_label("Reason").fill("contract signed (e2e)")
        row.get_by_role("button", name="Apply").click()
        op.wait_for_load_state()
        assert "is now active" in op.get_by_role("status").inner_text()

        # The tenant's owner sees the operator's account, not the bare platform admin, in the audit log.
        _sign_in(owner, stack, "owner@audited.test")
        owner.goto(_url(stack, "/audit?action=tenant.status_changed"))
        assert owner.locator("#audit tbody tr", has_text="ops@relay.test").count() == 1
    changed = [e for e in _audit(stack, tid, "tenant.status_changed") if e["metadata"].get("to") == "active"]
    assert [(e["actor_type"], e["actor_id"]) for e in changed] == [("platform_admin", "ops@relay.test")]
    assert watch.errors == []

    # A forged acting-operator header is refused with any credential but the admin token.
    with rest(stack, stack.test_key) as tenant_key:
        r = tenant_key.get("/v1/audit-events", headers={ACTING_OPERATOR_HEADER: "ops@relay.test"})
        assert r.status_code == 403 and ACTING_OPERATOR_HEADER in r.text, r.text
    with rest(stack, stack.admin_token) as admin:
        r = admin.post(f"/v1/tenants/{tid}:transition", json={"status": "TENANT_STATUS_SUSPENDED", "reason": "api"})
        assert r.status_code == 200, r.text
    [suspended] = [e for e in _audit(stack, tid, "tenant.status_changed") if e["metadata"].get("to") == "suspended"]
    assert suspended["actor_id"] == "platform_admin", "the bare admin token is still audited as the platform admin"


def test_an_operator_page_is_refused_to_a_signed_out_browser(stack: RelayStack) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.http_port}", timeout=30, follow_redirects=False) as web:
        assert web.get("/dashboard/operator/provider-events").status_code == 303
