"""The console's second set of pages in a real browser: one request's detail, usage and
invoices (with the CSV export), member role changes and removal, the audit log (console
sign-ins included), and what a read-only member sees there.

Its own stack and tenant (the story in test_dashboard.py suspends its tenant).
Every page is screenshotted at two widths, and no page logs a console error.
"""

from __future__ import annotations

import base64
import csv
import io
import ipaddress
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from relay_server.stack.redis import RedisHandle
from relay_server.workers.webhooks import SIGNATURE_HEADER, derived_secret, verify
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
        db, Path(tmp_path_factory.mktemp("relay-dashboard-pages")), redis_url=redis_server.url,
        extra_env={"RELAY_JOBS_POLL_S": "0.2", "RELAY_ROLLUP_INTERVAL_S": "0.5", "RELAY_BILLING_INTERVAL_S": "0.5",
                   "RELAY_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                   # The test webhook goes to a receiver on this machine, signed with a derived secret.
                   "RELAY_ALLOW_PRIVATE_DESTINATIONS": "true", "RELAY_WEBHOOK_POLL_S": "0.2",
                   "RELAY_WEBHOOK_SIGNING_KEY": SIGNING_KEY},
    )  # fmt: skip
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


SIGNING_KEY = secrets.token_urlsafe(24)


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """An HTTP server on loopback that keeps every POST (headers, body) and answers 204."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def tenant(stack: RelayStack) -> dict[str, Any]:
    with rest(stack, stack.admin_token) as admin:
        r = admin.post("/v1/tenants", json={"slug": "pages", "name": "Pages Co", "owner_email": "owner@pages.test"})
        assert r.status_code == 200, r.text
        tid = r.json()["tenant"]["id"]
        return wait_for(  # type: ignore[no-any-return]
            lambda: (t := admin.get(f"/v1/tenants/{tid}").json()["tenant"])["status"] == "TENANT_STATUS_TRIAL" and t,
            "trial",
        )


def _url(stack: RelayStack, path: str) -> str:
    return f"http://127.0.0.1:{stack.http_port}/dashboard{path}"


def _set_password(page: Any, link: str) -> None:
    page.goto(link)
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("Repeat it").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    page.wait_for_url(re.compile(r"/dashboard/signin$"))


def _sign_in(page: Any, stack: RelayStack, email: str, password: str = PASSWORD) -> None:
    page.goto(_url(stack, "/signin"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def _invite(page: Any, stack: RelayStack, email: str, role: str) -> str:
    page.goto(_url(stack, "/members"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role", exact=True).select_option(role)
    page.get_by_role("button", name="Invite").click()
    return str(page.get_by_label("Invitation link").input_value())


def test_console_pages(stack: RelayStack, tenant: dict[str, Any], tmp_path: Path) -> None:
    out = artifacts_dir(tmp_path)
    watch = ConsoleWatch()
    base = f"http://127.0.0.1:{stack.http_port}"
    invite = relay_cli(stack, "invite-link", "--email", "owner@pages.test", "--base-url", base)
    shots: list[Path] = []

    with browser() as b:
        owner_ctx = b.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        owner = watch.attach(owner_ctx.new_page())
        _set_password(owner, invite)
        _sign_in(owner, stack, "owner@pages.test", "not the password")
        assert "not right" in owner.get_by_role("alert").inner_text()
        _sign_in(owner, stack, "owner@pages.test")
        assert owner.get_by_role("button", name="Sign out owner@pages.test").is_visible()

        # Both sign-in attempts are in the tenant's audit log, as the member, with the browser's address.
        owner.goto(_url(stack, "/audit?action=dashboard.sign_in_failed"))
        failed = owner.locator("#audit tbody tr[data-action='dashboard.sign_in_failed']")
        assert failed.count() == 1 and "owner@pages.test" in failed.inner_text()
        ipaddress.ip_address(failed.locator("td.from").inner_text())  # the browser's address as Envoy saw it
        owner.goto(_url(stack, "/audit"))
        assert owner.locator("#audit tbody tr[data-action='dashboard.sign_in_succeeded']").count() == 1
        shots += shoot(owner, out, "audit")

        # A call, then its row in the log links to its detail.
        with rest(stack, stack.admin_token) as admin:
            r = admin.post("/v1/keys", json={"tenant_id": tenant["id"], "api_key": {"name": "pages key", "environment": "KEY_ENVIRONMENT_TEST"}})
            assert r.status_code == 200, r.text
            secret, key_id = r.json()["secret"], r.json()["api_key"]["id"]
        client = OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0, timeout=30)
        reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        request_id = reply.headers["x-request-id"]
        usage = reply.parse().usage
        assert usage is not None
        owner.goto(_url(stack, f"/requests?environment=test&api_key_id={key_id}"))
        wait_page(owner, lambda: owner.locator("#requests tbody tr", has_text=key_id).count() == 1, "the request row")
        owner.get_by_role("link", name=request_id).click()
        owner.wait_for_url(re.compile(f"/dashboard/requests/{request_id}$"))
        assert owner.locator("#d-status").inner_text().startswith("success")
        assert "gpt-4o-mini" in owner.locator("#d-model").inner_text()
        assert owner.locator("#d-input").inner_text() == str(usage.prompt_tokens)
        assert owner.locator("#d-output").inner_text() == str(usage.completion_tokens)
        assert owner.locator("#d-door").inner_text().startswith("OpenAI-compatible")
        assert owner.locator("#d-cache").inner_text() == "miss"
        assert float(owner.locator("#d-cost").inner_text().lstrip("$")) > 0
        shots += shoot(owner, out, "request-detail")
        # Another tenant's id, or a made-up one, is simply not found.
        missing = owner_ctx.request.get(_url(stack, "/requests/req_doesnotexist"))
        assert missing.status == 404 and "No request" in missing.text()

        # Test traffic gets statements too: the billing worker opens this month's period with a line for the model; the CSV has the same line.
        owner.goto(_url(stack, "/billing?environment=test"))
        line = owner.locator("section.period table.lines tbody tr", has_text="gpt-4o-mini")
        wait_page(owner, lambda: line.count() == 1, "the billing line item")
        assert line.locator("td").first.inner_text() == "1"
        with owner.expect_download() as download:
            owner.get_by_role("link", name="Download line items (CSV)").click()
        assert download.value.suggested_filename == "relay-billing-pages-test.csv"
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert [(r["model_id"], r["requests"], r["environment"]) for r in rows] == [("gpt-4o-mini", "1", "test")]
        assert int(rows[0]["input_tokens"]) == usage.prompt_tokens
        shots += shoot(owner, out, "billing")

        # A key with its own limits, spend cap and expiry; a malformed limit is named, nothing is created.
        owner.goto(_url(stack, "/keys"))
        owner.get_by_label("Name", exact=True).fill("capped key")
        owner.get_by_label("Requests per minute (empty: the plan's)").fill("60")
        owner.get_by_label("Spend cap in USD (empty: none)").fill("5")
        owner.get_by_label("Spend cap window", exact=True).select_option("daily")
        owner.get_by_label("Expires on (UTC date, empty: never)").fill("2099-01-31")
        owner.get_by_role("button", name="Create key").click()
        owner.wait_for_load_state()
        assert owner.locator("#page-error").count() == 0, owner.locator("main").inner_text()
        limits = owner.locator("tr", has_text="capped key").locator("td.limits").inner_text()
        assert "60 rpm" in limits and "daily" in limits and "expires 2099-01-31" in limits
        csrf = owner.locator("input[name=csrf]").first.input_value()
        bad = owner_ctx.request.post(_url(stack, "/keys"), form={"csrf": csrf, "name": "bad", "rpm": "lots"})
        assert bad.status == 400 and "Requests per minute must be a whole number" in bad.text()
        # Edit them: a new rate limit, the cap cleared (an empty field clears).
        capped = owner.locator("tr", has_text="capped key")
        capped.locator("summary", has_text="Edit limits").click()
        capped.get_by_label("Requests per minute").fill("120")
        capped.get_by_label("Spend cap in USD").fill("")
        capped.get_by_role("button", name="Save limits of capped key").click()
        owner.wait_for_load_state()
        assert owner.locator("#page-error").count() == 0, owner.locator("#page-error").inner_text()
        assert "Limits of “capped key” saved" in owner.get_by_role("status").inner_text()
        limits = owner.locator("tr", has_text="capped key").locator("td.limits").inner_text()
        assert "120 rpm" in limits and "daily" not in limits and "expires 2099-01-31" in limits
        shots += shoot(owner, out, "keys-limits")

        # Settings: allowed models and a spend cap are saved (and audited); a webhook URL the server
        # refuses is shown with its message; BYOK keys are listed by hint only.
        owner.goto(_url(stack, "/settings"))
        owner.get_by_label("Allowed models (comma-separated, empty: every model)").fill("gpt-4o-mini")
        owner.get_by_label("Tenant spend cap in USD (empty: none)").fill("100")
        owner.get_by_label("Spend cap window (daily, monthly or total)").fill("monthly")
        owner.get_by_role("button", name="Save settings").click()
        assert "Saved: allowed_models, spend_cap_usd, spend_cap_window" in owner.get_by_role("status").inner_text()
        assert owner.get_by_label("Allowed models (comma-separated, empty: every model)").input_value() == "gpt-4o-mini"
        owner.get_by_label("Webhook URL (https://; empty: no webhooks)").fill("ftp://hooks.example.test/relay")
        owner.get_by_role("button", name="Save settings").click()
        assert "webhook_url" in owner.get_by_role("alert").inner_text()
        # A test event to the webhook: signed and delivered like every tenant event.
        with webhook_receiver() as (hook_url, received):
            owner.get_by_label("Webhook URL (https://; empty: no webhooks)").fill(hook_url)
            owner.get_by_role("button", name="Save settings").click()
            assert "Saved: webhook_url" in owner.get_by_role("status").inner_text()
            owner.get_by_role("button", name="Send a test event to the webhook").click()
            assert f"is on its way to {hook_url}" in owner.get_by_role("status").inner_text()
            wait_for(lambda: received, "the test webhook", timeout=30)
        headers, body = received[0]
        assert headers["x-relay-event-type"] == "webhook.test" and json.loads(body)["data"]["test"] is True
        assert verify(derived_secret(SIGNING_KEY, tenant["id"]), headers[SIGNATURE_HEADER.lower()], body)
        with rest(stack, stack.admin_token) as admin:
            r = admin.put(f"/v1/tenants/{tenant['id']}/features/byok", json={"enabled": True, "reason": "e2e"})
            assert r.status_code == 200, r.text
        owner.goto(_url(stack, "/settings"))
        owner.locator("summary", has_text="Add a provider key").click()
        owner.get_by_label("Provider id (e.g. openai)").fill("openai")
        owner.get_by_label("Name", exact=True).fill("our openai")
        owner.get_by_label("Provider API key").fill("sk-e2e-secret-0123456789abcd")
        owner.get_by_role("button", name="Add key").click()
        owner.wait_for_load_state()
        assert owner.locator("#page-error").count() == 0, owner.locator("main").inner_text()
        assert "…abcd" in owner.locator("#credentials tr", has_text="our openai").inner_text()
        assert "sk-e2e-secret" not in owner.content()
        shots += shoot(owner, out, "settings")

        # Members: invite a developer, make them a viewer, then remove them; each change is audited.
        dev_link = _invite(owner, stack, "dev@pages.test", "developer")
        row = owner.locator("#members tr", has_text="dev@pages.test")
        row.get_by_label("New role of dev@pages.test").select_option("viewer")
        row.get_by_role("button", name="Change role of dev@pages.test").click()
        assert "dev@pages.test is now viewer" in owner.get_by_role("status").inner_text()
        assert owner.locator("#members tr", has_text="dev@pages.test").locator("td.role").inner_text() == "viewer"
        shots += shoot(owner, out, "members-manage")

        viewer_link = _invite(owner, stack, "viewer@pages.test", "viewer")
        viewer_ctx = b.new_context(viewport={"width": 1280, "height": 800})
        viewer = watch.attach(viewer_ctx.new_page())
        _set_password(viewer, viewer_link)
        _sign_in(viewer, stack, "viewer@pages.test")
        viewer.goto(_url(stack, "/members"))
        assert viewer.get_by_role("button", name=re.compile("^(Change role|Remove)")).count() == 0
        assert viewer.get_by_role("button", name="Invite").count() == 0
        # A viewer reads billing and the audit log, but a hand-made role change is refused by the API.
        viewer.goto(_url(stack, "/billing"))
        assert viewer.locator("#page-error").count() == 0
        dev_id = owner.locator("#members tr", has_text="dev@pages.test").get_attribute("data-user-id")
        csrf = viewer.locator("input[name=csrf]").first.input_value()
        refused = viewer_ctx.request.post(_url(stack, f"/members/{dev_id}/role"), form={"csrf": csrf, "role": "owner"})
        assert refused.status == 403 and "permission" in refused.text().lower()
        shots += shoot(viewer, out, "billing-viewer")
        viewer.goto(_url(stack, "/settings"))
        assert viewer.get_by_role("button", name="Save settings").count() == 0
        assert viewer.get_by_label("Allowed models (comma-separated, empty: every model)").get_attribute("readonly") is not None
        refused = viewer_ctx.request.post(_url(stack, "/settings"), form={"csrf": csrf, "allowed_models": ""})
        assert refused.status == 403, refused.text()

        # The developer (now viewer) accepts, then is removed: their session ends at the next page.
        dev_ctx = b.new_context(viewport={"width": 1280, "height": 800})
        dev = watch.attach(dev_ctx.new_page())
        _set_password(dev, dev_link)
        _sign_in(dev, stack, "dev@pages.test")
        dev.goto(_url(stack, "/"))
        owner.goto(_url(stack, "/members"))
        owner.get_by_role("button", name="Remove dev@pages.test").click()
        assert "dev@pages.test is no longer a member" in owner.get_by_role("status").inner_text()
        assert owner.locator("#members tr", has_text="dev@pages.test").count() == 0
        dev.goto(_url(stack, "/members"))
        dev.wait_for_url(re.compile(r"/dashboard/signin$"))

        owner.goto(_url(stack, "/audit"))
        actions = owner.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => r.dataset.action)")
        assert {"member.role_changed", "member.removed", "member.added", "tenant.config_updated",
                "webhook.test_requested", "webhook.test"} <= set(actions)
        changed = owner.locator("#audit tbody tr[data-action='member.role_changed']")
        assert "from: developer" in changed.inner_text() and "to: viewer" in changed.inner_text()

        # Five wrong passwords lock the viewer's account; the refused attempt after that is audited as locked.
        with httpx.Client(base_url=base, timeout=30) as web:
            presign = re.search(r'name="csrf" value="([^"]+)"', web.get("/dashboard/signin").text)
            assert presign
            attempt = {"email": "viewer@pages.test", "csrf": presign[1]}
            for _ in range(5):
                assert web.post("/dashboard/signin", data={**attempt, "password": "wrong password!"}).status_code == 401
            assert web.post("/dashboard/signin", data={**attempt, "password": PASSWORD}).status_code == 429
        owner.goto(_url(stack, "/audit?action=dashboard.sign_in_locked"))
        assert owner.locator("#audit tbody tr", has_text="viewer@pages.test").count() == 1
        owner.goto(_url(stack, "/audit?action=dashboard.sign_in_failed"))
        assert owner.locator("#audit tbody tr", has_text="viewer@pages.test").count() == 5

        # Operator pages: providers with their circuit and routes, the catalog with prices, events of every tenant.
        relay_cli(stack, "create-operator", "--email", "op@pages.test", "--password-stdin", stdin=PASSWORD + "\n")
        op = watch.attach(b.new_context(viewport={"width": 1280, "height": 800}).new_page())
        _sign_in(op, stack, "op@pages.test")
        op.goto(_url(stack, "/operator/providers"))
        assert op.locator("#providers tbody tr[data-provider-id]").count() >= 1
        assert op.locator("#providers td.circuit").first.inner_text() in ("closed", "open", "half open")
        assert op.locator("ul.routes li", has_text="gpt-4o-mini").count() >= 1
        shots += shoot(op, out, "operator-providers")
        op.goto(_url(stack, "/operator/catalog"))
        model = op.locator("#catalog tr[data-model-id='gpt-4o-mini']")
        assert model.count() == 1 and model.locator("td.price-in").inner_text().startswith("$")
        shots += shoot(op, out, "operator-catalog")
        op.goto(_url(stack, "/operator/events?action=tenant.status_changed"))
        assert op.locator(f"#events tr[data-tenant-id='{tenant['id']}']").count() >= 1  # provisioning → trial
        op.goto(_url(stack, "/operator/events?action=dashboard.sign_in_locked"))
        assert op.locator("#events tbody tr", has_text="viewer@pages.test").count() == 1
        shots += shoot(op, out, "operator-events")
        # A tenant member is no operator.
        assert owner_ctx.request.get(_url(stack, "/operator/providers")).status == 403

    # The console's platform-side calls are for the platform only: a tenant's own key cannot ask.
    with rest(stack, secret) as tenant_api:
        r = tenant_api.get("/v1/account-memberships", params={"email": "owner@pages.test"})
        assert r.status_code in (401, 403), r.text
        r = tenant_api.post("/v1/sign-ins", json={"email": "owner@pages.test", "outcome": "succeeded"})
        assert r.status_code in (401, 403), r.text
    with rest(stack, stack.admin_token) as admin:
        r = admin.get("/v1/account-memberships", params={"email": "OWNER@pages.test"})
        assert r.status_code == 200, r.text
        [membership] = r.json()["memberships"]
        assert membership["tenant_id"] == tenant["id"] and membership["role"] == "owner"
        assert "api_keys:create" in membership["permissions"]
        r = admin.post("/v1/sign-ins", json={"email": "owner@pages.test", "outcome": "guessed"})
        assert r.status_code == 400, r.text
        r = admin.get("/v1/audit-events", params={"all_tenants": "true", "tenant_id": tenant["id"]})
        assert r.status_code == 400, r.text
    with rest(stack, secret) as tenant_api:  # every tenant's events are for operators only
        r = tenant_api.get("/v1/audit-events", params={"all_tenants": "true"})
        assert r.status_code in (401, 403), r.text

    assert all(p.stat().st_size > 1000 for p in shots) and len(shots) == 20
    assert watch.errors == []
