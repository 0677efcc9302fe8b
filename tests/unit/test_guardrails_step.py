"""The guardrail admission step and the classifier client, without a server: policies per key,
compiled once per stored version; input refusals and redaction; the classifier's verdicts,
timeouts and the destination policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web

from relay_server.domain.guardrails import Classifier
from relay_server.domain.request import Principal, RequestContext
from relay_server.errors import RelayError
from relay_server.pipeline.guardrails.classifier import ClassifierClient
from relay_server.pipeline.guardrails.policy import GuardrailSource
from relay_server.pipeline.guardrails.step import Guardrails

pytestmark = pytest.mark.asyncio


class Values:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values_ = dict(values)

    async def values(self, tenant_id: str) -> Mapping[str, str]:
        return self.values_


def principal(key_id: str = "key_a") -> Principal:
    return Principal("ten_1", key_id, "abcd", "live", "inference")


def request(text: str, key_id: str = "key_a", **extra: Any) -> RequestContext:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    return RequestContext(request_id="req_1", kind="chat", body=body, principal=principal(key_id),
                          door="anthropic", native_body={"messages": []})  # fmt: skip


async def test_no_policy_costs_nothing_and_changes_nothing() -> None:
    source = GuardrailSource(Values({"markup_rate": "0.2"}))
    assert await source.for_principal(principal()) is None
    ctx = request("jane@example.com")
    assert await Guardrails(source).admit(ctx, 10) is None
    assert ctx.native_body is not None and ctx.guardrails is None


async def test_a_key_override_applies_only_to_its_key_and_policies_compile_once() -> None:
    raw = json.dumps({"pii": {"email": "redact"}, "keys": {"key_b": {"pii": {"email": "block"}}}})
    source = GuardrailSource(Values({"guardrails": raw}))
    first = await source.for_principal(principal("key_a"))
    assert first is not None and first is await source.for_principal(principal("key_a"))  # compiled once
    guard = Guardrails(source)
    ctx = request("mail jane@example.com please")
    await guard.admit(ctx, 10)
    assert ctx.body["messages"][0]["content"] == "mail [EMAIL] please"
    assert ctx.native_body is None  # redacted requests take the translated path
    assert ctx.guardrails == {("pii.email", "input", "redact"): 1}
    with pytest.raises(RelayError) as blocked:
        await guard.admit(request("mail jane@example.com please", key_id="key_b"), 10)
    assert blocked.value.code == "content_policy_violation" and blocked.value.http_status == 400
    assert "jane" not in blocked.value.message


async def test_the_client_body_is_never_mutated() -> None:
    guard = Guardrails(GuardrailSource(Values({"guardrails": json.dumps({"pii": {"ip": "redact"}})})))
    parts = [{"type": "text", "text": "host 10.0.0.1"}]
    ctx = request("x")
    ctx.body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    original = json.dumps(ctx.body)
    await guard.admit(ctx, 1)
    assert ctx.body["messages"][0]["content"][0]["text"] == "host [IP]" and json.dumps(parts) in original


@pytest.mark.parametrize(
    ("policy", "extra", "code"),
    [
        ({"input": {"max_input_tokens": 5}}, {}, "input_tokens_exceeded"),
        ({"input": {"max_characters": 3}}, {}, "input_characters_exceeded"),
        ({"input": {"max_tools": 1}}, {"tools": [{}, {}]}, "too_many_tools"),
        ({"deny": {"patterns": ["(?i)falcon"]}}, {}, "content_policy_violation"),
    ],
)
async def test_input_limits_and_deny_lists(policy: dict[str, Any], extra: dict[str, Any], code: str) -> None:
    guard = Guardrails(GuardrailSource(Values({"guardrails": json.dumps(policy)})))
    with pytest.raises(RelayError) as refused:
        await guard.admit(request("Project Falcon plans", **extra), 10)
    assert refused.value.code == code and refused.value.http_status == 400


async def test_flagged_deny_patterns_are_recorded_not_refused() -> None:
    guard = Guardrails(GuardrailSource(Values({"guardrails": json.dumps({"deny": {"patterns": ["falcon"], "action": "flag"}})})))
    ctx = request("falcon and falcon")
    await guard.admit(ctx, 1)
    assert ctx.guardrails == {("deny", "input", "flag"): 1}


# --- the classifier ------------------------------------------------------------------------------


@pytest.fixture
async def classifier_url(unused_tcp_port: int):  # type: ignore[no-untyped-def]
    seen: list[dict[str, Any]] = []

    async def check(req: web.Request) -> web.Response:
        body = await req.json()
        seen.append(body)
        if "slow" in " ".join(body["input"]):
            await asyncio.sleep(2)
        if "broken" in " ".join(body["input"]):
            return web.Response(status=500)
        return web.json_response({"flagged": "bad" in " ".join(body["input"])})

    app = web.Application()
    app.router.add_post("/check", check)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    yield f"http://127.0.0.1:{unused_tcp_port}/check", seen
    await runner.cleanup()


async def test_classifier_verdicts_timeouts_and_fail_modes(classifier_url: Any) -> None:
    url, seen = classifier_url
    client = ClassifierClient(allow_private=True)
    try:
        open_ = Classifier(url, timeout_ms=300, fail_open=True)
        closed = Classifier(url, timeout_ms=300, fail_open=False)
        assert await client.check(open_, ["a good question"], "req_1") == "allow"
        assert seen[-1] == {"request_id": "req_1", "input": ["a good question"]}
        assert await client.check(open_, ["a bad question"], "req_2") == "block"
        assert await client.check(open_, ["slow"], "req_3") == "fail_open"
        assert await client.check(closed, ["slow"], "req_4") == "unavailable"
        assert await client.check(closed, ["broken"], "req_5") == "unavailable"
    finally:
        await client.close()
    guarded = ClassifierClient(allow_private=False)  # loopback is a private destination
    try:
        before = len(seen)
        assert await guarded.check(Classifier(url, 300, False), ["a good question"], "req_6") == "unavailable"
        assert len(seen) == before  # never dialled
    finally:
        await guarded.close()


async def test_the_step_refuses_on_a_flag_and_fails_closed_with_503(classifier_url: Any) -> None:
    url, _ = classifier_url
    policy = {"classifier": {"url": url, "timeout_ms": 300, "fail": "closed"}}
    guard = Guardrails(GuardrailSource(Values({"guardrails": json.dumps(policy)})), ClassifierClient(allow_private=True))
    try:
        with pytest.raises(RelayError) as flagged:
            await guard.admit(request("a bad idea"), 1)
        assert flagged.value.code == "content_policy_violation"
        with pytest.raises(RelayError) as down:
            await guard.admit(request("slow"), 1)
        assert down.value.http_status == 503 and down.value.code == "guardrail_unavailable"
        ok = request("fine")
        await guard.admit(ok, 1)
        assert ok.guardrails == {("classifier", "input", "allow"): 1}
    finally:
        await guard.close()
