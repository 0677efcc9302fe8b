"""The web console in a real browser (Debian's chromium, headless), through Envoy at /dashboard.

One story, in order: an operator is bootstrapped from the CLI; a tenant's
owner accepts an invitation and signs in; creates a key (secret shown once),
uses it with the openai SDK, finds the call in the request log and the usage
chart, revokes it and sees the next call fail; invites a read-only member who
cannot create keys; the operator suspends the tenant and its calls get 402.
Every main page is screenshotted at two widths, and no page logs a console error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from relay_server.stack.redis import RedisHandle
from tests.e2e.admin_helpers import rest, wait_for
from tests.e2e.dashboard_support import (
    PASSWORD,
    ConsoleWatch,
    artifacts_dir,
    browser,
    chromium_path,
    relay_cli,
    shoot,
    wait_page,
)
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(chromium_path() is None, reason="chromium missing: `make test` installs it"),
]


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    relay = start_stack(
        db, Path(tmp_path_factory.mktemp("relay-dashboard")), redis_url=redis_server.url,
        extra_env={"RELAY_JOBS_POLL_S": "0.2", "RELAY_ROLLUP_INTERVAL_S": "0.5"},
    )  # fmt: skip
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


@pytest.fixture(scope="module")
def tenant(stack: RelayStack) -> dict[str, Any]:
    with rest(stack, stack.admin_token) as admin:
        r = admin.post("/v1/tenants", json={"slug": "console", "name": "Console Co", "owner_email": "owner@console.test"})
        assert r.status_code == 200, r.text
        tid = r.json()["tenant"]["id"]
        return wait_for(  # type: ignore[no-any-return]
            lambda: (t := admin.get(f"/v1/tenants/{tid}").json()["tenant"])["status"] == "TENANT_STATUS_TRIAL" and t,
            "trial",
        )


def _url(stack: RelayStack, path: str) -> str:
    return f"http://127.0.0.1:{stack.http_port}/dashboard{path}"


def _chat(stack: RelayStack, key: str) -> str:
    client = OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    return reply.id


def _set_password(page: Any, link: str) -> None:
    page.goto(link)
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("Repeat it").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    page.wait_for_url(re.compile(r"/dashboard/signin$"))


def _sign_in(page: Any, stack: RelayStack, email: str) -> None:
    page.goto(_url(stack, "/signin"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.get_by_role("button", name=re.compile(f"Sign out {re.escape(email)}")).is_visible()


def test_console_story(stack: RelayStack, tenant: dict[str, Any], tmp_path: Path) -> None:
    out = artifacts_dir(tmp_path)
    watch = ConsoleWatch()
    relay_cli(stack, "create-operator", "--email", "op@relay.test", "--password-stdin", stdin=PASSWORD + "\n")
    invite = relay_cli(stack, "invite-link", "--email", "owner@console.test", "--base-url", f"http://127.0.0.1:{stack.http_port}")
    shots: list[Path] = []

    with browser() as b:
        owner = watch.attach(b.new_context(viewport={"width": 1280, "height": 800}).new_page())
        _set_password(owner, invite)
        # The link is single-use.
        owner.goto(invite)
        assert "not valid" in owner.get_by_role("alert").inner_text()
        _sign_in(owner, stack, "owner@console.test")
        shots += shoot(owner, out, "overview-empty")

        # Create a test-environment key: the secret is shown once, with a copy button.
        owner.goto(_url(stack, "/keys"))
        owner.get_by_label("Name", exact=True).fill("console key")
        owner.get_by_label("Environment").select_option("test")
        owner.get_by_role("button", name="Create key").click()
        owner.wait_for_load_state()
        assert owner.locator("#page-error").count() == 0, owner.locator("main").inner_text()
        secret = owner.get_by_label('Secret of “console key”').input_value()
        assert secret.startswith("rly_test_")
        assert owner.get_by_role("button", name="Copy").is_visible()
        shots += shoot(owner, out, "keys-created")
        key_id = owner.locator("tr", has_text="console key").get_attribute("data-key-id")
        assert key_id and key_id.startswith("key_")
        owner.goto(_url(stack, "/keys"))
        assert secret not in owner.content()  # never shown again

        request_id = _chat(stack, secret)

        # The call in the request log (filtered to the key) and in the usage chart.
        owner.goto(_url(stack, f"/requests?environment=test&api_key_id={key_id}"))
        wait_page(owner, lambda: owner.locator("#requests tbody tr", has_text=key_id).count() == 1, "the request row")
        row = owner.locator("#requests tbody tr", has_text=key_id)
        assert "gpt-4o-mini" in row.inner_text() and "success" in row.inner_text()
        shots += shoot(owner, out, "requests")
        owner.goto(_url(stack, "/?environment=test"))
        wait_page(owner, lambda: owner.locator("#usage-key tbody tr", has_text=key_id).count() == 1, "the usage row")
        assert owner.locator("#usage-key tbody tr", has_text=key_id).locator("td").first.inner_text().strip() == "1"
        assert int(owner.locator("#total-requests").inner_text()) >= 1
        shots += shoot(owner, out, "overview")

        # Revoke with confirmation; the next call fails.
        owner.goto(_url(stack, "/keys"))
        owner.get_by_role("button", name="Revoke console key").click()
        assert "revoked" in owner.get_by_role("status").inner_text()
        assert "revoked" in owner.locator("tr", has_text="console key").inner_text()
        with pytest.raises(openai.AuthenticationError):
            _chat(stack, secret)

        # Invite a read-only member.
        owner.goto(_url(stack, "/members"))
        owner.get_by_label("Email").fill("viewer@console.test")
        owner.get_by_label("Role").select_option("viewer")
        owner.get_by_role("button", name="Invite").click()
        viewer_link = owner.get_by_label("Invitation link").input_value()
        assert "viewer@console.test" in owner.locator("#members").inner_text()
        shots += shoot(owner, out, "members")

        viewer_ctx = b.new_context(viewport={"width": 1280, "height": 800})
        viewer = watch.attach(viewer_ctx.new_page())
        _set_password(viewer, viewer_link)
        _sign_in(viewer, stack, "viewer@console.test")
        viewer.goto(_url(stack, "/keys"))
        assert viewer.get_by_role("button", name="Create key").count() == 0
        assert viewer.get_by_role("button", name=re.compile("^Revoke")).count() == 0
        # Even a hand-made form post (with a valid CSRF token) is refused by the API's RBAC.
        csrf = viewer.locator("input[name=csrf]").first.input_value()
        refused = viewer_ctx.request.post(_url(stack, "/keys"), form={"csrf": csrf, "name": "sneaky"})
        assert refused.status == 403, refused.text()
        assert "permission" in refused.text().lower()
        shots += shoot(viewer, out, "keys-viewer")

        # The operator suspends the tenant; its keys get 402.
        with rest(stack, stack.admin_token) as admin:
            r = admin.post("/v1/keys", json={"tenant_id": tenant["id"], "api_key": {"name": "still here", "environment": "KEY_ENVIRONMENT_TEST"}})
            assert r.status_code == 200, r.text
            live_secret = r.json()["secret"]
        _chat(stack, live_secret)
        op = watch.attach(b.new_context(viewport={"width": 1280, "height": 800}).new_page())
        _sign_in(op, stack, "op@relay.test")
        op.goto(_url(stack, "/operator/tenants?q=console"))

        def transition(status: str, reason: str) -> None:
            row = op.locator(f"tr[data-tenant-id='{tenant['id']}']")
            row.get_by_label("New status of Console Co").select_option(status)
            row.get_by_label("Reason").fill(reason)
            row.get_by_role("button", name="Apply").click()
            op.wait_for_load_state()

        # trial → suspended is not a legal move: the lifecycle's refusal is shown, nothing changes.
        transition("suspended", "too early")
        assert "cannot go from `trial` to `suspended`" in op.get_by_role("alert").inner_text()
        assert op.locator(f"tr[data-tenant-id='{tenant['id']}'] td.status-trial").count() == 1
        _chat(stack, live_secret)
        transition("active", "payment added (e2e)")
        assert "is now active" in op.get_by_role("status").inner_text()
        transition("suspended", "payment failed (e2e)")
        assert "is now suspended" in op.get_by_role("status").inner_text()
        assert op.locator(f"tr[data-tenant-id='{tenant['id']}'] td.status-suspended").count() == 1
        shots += shoot(op, out, "operator-tenants")
        with pytest.raises(openai.APIStatusError) as refused_call:
            _chat(stack, live_secret)
        assert refused_call.value.status_code == 402

    assert request_id
    assert all(p.stat().st_size > 1000 for p in shots) and len(shots) == 14
    assert watch.errors == []


def test_sign_in_security(stack: RelayStack, tenant: dict[str, Any]) -> None:
    """Cookies, CSRF and lockout over plain HTTP through Envoy."""
    relay_cli(stack, "create-operator", "--email", "lock@relay.test", "--password-stdin", stdin=PASSWORD + "\n")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.http_port}", timeout=30) as web:
        form = web.get("/dashboard/signin")
        assert form.status_code == 200
        presign = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert presign
        # A sign-in post without the form's token is refused (login CSRF).
        r = web.post("/dashboard/signin", data={"email": "lock@relay.test", "password": PASSWORD, "csrf": "x"})
        assert r.status_code == 403
        r = web.post("/dashboard/signin", data={"email": "lock@relay.test", "password": PASSWORD, "csrf": presign[1]})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "relay_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "Path=/dashboard" in cookie and "Secure" not in cookie  # plain HTTP here
        page = web.get("/dashboard/operator/tenants")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # A state change without the session's CSRF token changes nothing.
        r = web.post(f"/dashboard/operator/tenants/{tenant['id']}/transition", data={"status": "active", "reason": "x"})
        assert r.status_code == 403
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        r = web.post("/dashboard/signout", data={"csrf": csrf[1]})
        assert r.status_code == 303
        assert web.get("/dashboard/operator/tenants").status_code == 303  # signed out: back to sign-in

        # Five wrong passwords lock the account: then even the right one is refused.
        presign = re.search(r'name="csrf" value="([^"]+)"', web.get("/dashboard/signin").text)  # a fresh form
        assert presign
        for _ in range(5):
            r = web.post("/dashboard/signin", data={"email": "lock@relay.test", "password": "wrong password!", "csrf": presign[1]})
            assert r.status_code == 401 and "not right" in r.text
        r = web.post("/dashboard/signin", data={"email": "lock@relay.test", "password": PASSWORD, "csrf": presign[1]})
        assert r.status_code == 429 and "locked" in r.text
        # Unknown emails answer exactly like wrong passwords.
        r = web.post("/dashboard/signin", data={"email": "nobody@relay.test", "password": PASSWORD, "csrf": presign[1]})
        assert r.status_code == 401 and "not right" in r.text
