"""The console's threads browser, guardrail decisions on a request's detail, child keys of a
management key and renaming a key, in a real browser against a real stack.

A tenant's API key creates a thread and sends a message through the thread API; its owner sees
both in the console, never another tenant's thread.  A guardrail redacts an e-mail address: the
admin API returns the decision and the request's page shows it.  The owner mints a child of a
management key (the secret shown once, and it works), then renames it.
Every new page is screenshotted at two widths, and no page logs a console error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.e2e.admin_helpers import rest, wait_for
from tests.e2e.dashboard_support import ConsoleWatch, artifacts_dir, browser, chromium_path, relay_cli, shoot, wait_page
from tests.e2e.test_dashboard_pages import _set_password, _sign_in, _url
from tests.e2e.test_dashboard_pages import stack as stack  # noqa: F401 (the module's own stack, shared by import)
from tests.support.stack import RelayStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(chromium_path() is None, reason="chromium missing: `make test` installs it"),
]


def _tenant(admin: httpx.Client, slug: str) -> str:
    r = admin.post("/v1/tenants", json={"slug": slug, "name": f"{slug.title()} Co", "owner_email": f"owner@{slug}.test"})
    assert r.status_code == 200, r.text
    tid = r.json()["tenant"]["id"]
    wait_for(lambda: admin.get(f"/v1/tenants/{tid}").json()["tenant"]["status"] == "TENANT_STATUS_TRIAL", "trial")
    return str(tid)


def _key(admin: httpx.Client, tenant_id: str, name: str, scope: str = "KEY_SCOPE_INFERENCE") -> tuple[str, str]:
    r = admin.post("/v1/keys", json={"tenant_id": tenant_id, "api_key": {"name": name, "environment": "KEY_ENVIRONMENT_TEST", "scope": scope}})
    assert r.status_code == 200, r.text
    return r.json()["secret"], r.json()["api_key"]["id"]


def _thread_with_a_message(stack: RelayStack, secret: str, title: str, text: str) -> dict[str, Any]:
    with rest(stack, secret) as api:
        thread = api.post("/v1/threads", json={"title": title, "end_user_id": "user_7", "metadata": {"topic": "billing"}})
        assert thread.status_code == 200, thread.text
        sent = api.post(f"/v1/threads/{thread.json()['id']}/messages",
                        json={"model": "gpt-4o-mini", "content": [{"type": "text", "text": text}]})  # fmt: skip
        assert sent.status_code == 200, sent.text
        return {"id": thread.json()["id"], "reply": sent.json()["assistant_message"]}


def test_threads_guardrails_and_child_keys_in_the_console(stack: RelayStack, tmp_path: Path) -> None:  # noqa: F811
    out = artifacts_dir(tmp_path)
    watch = ConsoleWatch()
    base = f"http://127.0.0.1:{stack.http_port}"
    with rest(stack, stack.admin_token) as admin:
        tid, other_tid = _tenant(admin, "threadco"), _tenant(admin, "elsewhere")
        secret, key_id = _key(admin, tid, "support bot")
        _, mgmt_id = _key(admin, tid, "reseller", "KEY_SCOPE_MANAGEMENT")
        other_secret, _ = _key(admin, other_tid, "other bot")
    ours = _thread_with_a_message(stack, secret, "Invoice question", "Why is my invoice higher this month?")
    theirs = _thread_with_a_message(stack, other_secret, "Not yours", "A secret of another tenant")
    invite = relay_cli(stack, "invite-link", "--email", "owner@threadco.test", "--base-url", base)
    shots: list[Path] = []

    with browser() as b:
        ctx = b.new_context(viewport={"width": 1280, "height": 800})
        owner = watch.attach(ctx.new_page())
        _set_password(owner, invite)
        _sign_in(owner, stack, "owner@threadco.test")

        # The threads list: this tenant's thread with its title, metadata, count and key; not the other tenant's.
        owner.get_by_role("link", name="Threads").click()
        owner.wait_for_url(re.compile(r"/dashboard/threads$"))
        row = owner.locator(f"#threads tr[data-thread-id='{ours['id']}']")
        assert row.count() == 1
        assert "Invoice question" in row.locator("td.title").inner_text() and "topic: billing" in row.inner_text()
        assert row.locator("td.count").inner_text() == "2" and key_id in row.inner_text()
        assert owner.locator(f"#threads tr[data-thread-id='{theirs['id']}']").count() == 0
        assert "Not yours" not in owner.content()
        shots += shoot(owner, out, "threads")

        # One thread: the user's message and the model's reply, with model, tokens and time.
        row.get_by_role("link", name=ours["id"]).click()
        owner.wait_for_url(re.compile(f"/dashboard/threads/{ours['id']}$"))
        user = owner.locator("#messages tr[data-seq='1']")
        reply = owner.locator("#messages tr[data-seq='2']")
        assert user.locator("td.role").inner_text() == "user"
        assert "Why is my invoice higher this month?" in user.locator("td.text").inner_text()
        assert reply.locator("td.role").inner_text() == "assistant" and "gpt-4o-mini" in reply.inner_text()
        assert f"{ours['reply']['input_tokens']} / {ours['reply']['output_tokens']}" in reply.inner_text()
        assert ours["reply"]["content"][0]["text"][:20] in reply.locator("td.text").inner_text()
        shots += shoot(owner, out, "thread-detail")
        # The reply's request has no guardrail decisions: the detail says so.
        reply.get_by_role("link", name="request").click()
        owner.wait_for_url(re.compile(r"/dashboard/requests/req_"))
        wait_page(owner, lambda: owner.locator("#guardrails-none").count() == 1, "the request detail")
        # Another tenant's thread is not found, whatever the URL says.
        missing = ctx.request.get(_url(stack, f"/threads/{theirs['id']}"))
        assert missing.status == 404 and "A secret of another tenant" not in missing.text()

        # A guardrail redacts an e-mail address: the API returns the decision, the detail page shows it.
        with rest(stack, stack.admin_token) as admin:
            policy = json.dumps({"pii": {"email": "redact"}})
            r = admin.patch(f"/v1/tenants/{tid}/config", json={"config": {"guardrails": policy}})
            assert r.status_code == 200, r.text
        client = OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0, timeout=30)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Write to jane@example.com please"}])
        request_id = raw.headers["x-request-id"]
        with rest(stack, stack.admin_token) as admin:
            record = wait_for(lambda: admin.get("/v1/requests", params={"tenant_id": tid, "request_id": request_id}).json()["requests"],
                              "the request row")  # fmt: skip
        assert record[0]["guardrails"] == [{"guardrail": "pii.email", "stage": "input", "action": "redact", "count": 1}]
        owner.goto(_url(stack, f"/requests/{request_id}"))
        decision = owner.locator("#guardrails tr[data-guardrail='pii.email']")
        assert decision.count() == 1
        assert [c.strip() for c in decision.locator("td").all_inner_texts()] == ["pii.email", "input", "redact", "1"]
        shots += shoot(owner, out, "request-guardrails")

        # A child of the management key, minted from the keys page: the secret once, and it works.
        owner.goto(_url(stack, "/keys"))
        parent = owner.locator(f"#keys tr[data-key-id='{mgmt_id}']")
        parent.locator("summary", has_text="Add a child key").click()
        parent.get_by_label("Child name").fill("customer 7")
        parent.get_by_label("Child end user id").fill("user_7")
        parent.get_by_label("Child's rate limit").fill("30")
        parent.get_by_role("button", name="Create a child key of reseller").click()
        owner.wait_for_load_state()
        assert owner.locator("#page-error").count() == 0, owner.locator("main").inner_text()
        child_secret = owner.get_by_label("Secret of “customer 7”").input_value()
        assert child_secret.startswith("rly_test_sk_")
        child = owner.locator("#keys tr", has_text="customer 7")
        assert f"child of {mgmt_id}" in child.locator("th").inner_text() and "30 rpm" in child.locator("td.limits").inner_text()
        shots += shoot(owner, out, "keys-child")
        child_client = OpenAI(base_url=stack.base_url, api_key=child_secret, max_retries=0, timeout=30)
        assert child_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices
        # An inference key has no children: the page offers none, and a forged post is refused by the API.
        plain = owner.locator(f"#keys tr[data-key-id='{key_id}']")
        assert plain.locator("summary", has_text="Add a child key").count() == 0
        csrf = owner.locator("input[name=csrf]").first.input_value()
        refused = ctx.request.post(_url(stack, f"/keys/{key_id}/children"), form={"csrf": csrf, "name": "nope"})
        assert refused.status == 400 and "not a management key" in refused.text()

        # Rename the child; the new name is listed and the change is audited.
        child.locator("summary", has_text="Rename").click()
        child.get_by_label("New name").fill("customer seven")
        child.get_by_role("button", name="Save the name of customer 7").click()
        owner.wait_for_load_state()
        assert "now named “customer seven”" in owner.get_by_role("status").inner_text()
        assert owner.locator("#keys tr", has_text="customer seven").count() == 1
        owner.goto(_url(stack, "/audit?action=api_key.updated"))
        assert "customer seven" in owner.locator("#audit tbody tr").first.inner_text()
        owner.goto(_url(stack, "/audit?action=api_key.created"))
        assert f"parent_key_id: {mgmt_id}" in owner.locator("#audit tbody tr", has_text="customer 7").inner_text()

    # The admin API behind the pages: REST through Envoy; an API key of the tenant may not browse.
    with rest(stack, stack.admin_token) as admin:
        listed = admin.get("/v1/tenant-threads", params={"tenant_id": other_tid}).json()["threads"]
        assert [t["id"] for t in listed] == [theirs["id"]] and listed[0]["message_count"] == 2
        messages = admin.get(f"/v1/tenant-threads/{ours['id']}/messages", params={"tenant_id": tid, "page_size": 1}).json()
        assert [m["text"] for m in messages["messages"]] == ["Why is my invoice higher this month?"] and messages["next_page_token"]
        assert admin.get(f"/v1/tenant-threads/{theirs['id']}/messages", params={"tenant_id": tid}).status_code == 404
    with rest(stack, secret) as tenant_key:
        assert tenant_key.get("/v1/tenant-threads").status_code in (401, 403)

    assert all(p.stat().st_size > 1000 for p in shots) and len(shots) == 8
    assert watch.errors == []
