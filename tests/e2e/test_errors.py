"""Every error of the table: exact status, OpenAI-shaped body, and the openai SDK's matching exception."""

from __future__ import annotations

import json

import httpx
import openai
import psycopg
import pytest
from openai import OpenAI

from relay_server.domain.keys import mint_key
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert not any(name.startswith(("grpc-", "x-relay-")) for name in response.headers)
    return error


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
        (b"", 400, None),
        (json.dumps({"model": "gpt-4o-mini"}).encode(), 400, "missing_required_parameter"),
        (json.dumps({"model": "", "messages": CHAT["messages"]}).encode(), 400, "missing_required_parameter"),
        (json.dumps({**CHAT, "temperature": "hot"}).encode(), 400, "invalid_type"),
        (json.dumps({**CHAT, "messages": [{"role": "user"}]}).encode(), 400, "missing_required_parameter"),
        (json.dumps({**CHAT, "temperature": 9}).encode(), 422, "invalid_value"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_bodies_are_clear_4xx(http: httpx.Client, content: bytes, status: int, code: str | None, stream: bool) -> None:
    if stream and content.startswith(b"{") and b'"model"' in content:
        body = json.loads(content.decode("utf-8", "replace"))
        body["stream"] = True
        content = json.dumps(body).encode() if b"\xff" not in content else content
    response = http.post("/chat/completions", content=content, headers={"content-type": "application/json"})
    _assert_openai_error(response, status, code)


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    huge = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"a" * (33 * 1024 * 1024) + b'"}]}'
    _assert_openai_error(http.post("/chat/completions", content=huge), 413)


@pytest.mark.parametrize("path", ["/nope", "/chat/completion", "/../../admin"])
def test_unknown_routes_are_openai_shaped_404(http: httpx.Client, path: str) -> None:
    _assert_openai_error(http.post(path, json=CHAT), 404)


def test_sdk_exception_classes(relay: RelayStack, client: OpenAI) -> None:
    bad = OpenAI(base_url=relay.base_url, api_key="rly_test_sk_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.chat.completions.create(**CHAT)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9-imaginary", messages=CHAT["messages"])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(**CHAT, top_p=7)
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.embeddings.create(model="gpt-4o-mini", input="x")
    assert wrong_kind.value.param == "model"


@pytest.mark.parametrize(
    ("code", "status", "exception"),
    [
        ("rate_limit_exceeded", 429, openai.RateLimitError),
        ("spend_cap_exceeded", 402, openai.APIStatusError),
        ("quota_exceeded", 402, openai.APIStatusError),
        ("provider_error", 502, openai.InternalServerError),
        ("no_provider_available", 503, openai.InternalServerError),
        ("request_timeout", 504, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_simulated_errors_reach_the_sdk_with_status_and_class(
    client: OpenAI, code: str, status: int, exception: type[Exception], stream: bool
) -> None:
    with pytest.raises(exception) as info:
        result = client.chat.completions.create(**CHAT, stream=stream, extra_headers={"x-relay-test-error": code})
        list(result) if stream else None
    assert info.value.status_code == status
    assert info.value.code == code
    headers = info.value.response.headers
    assert headers["x-request-id"].startswith("req_")
    if status == 429:
        assert headers["retry-after"] == "1"
    if status == 402:
        assert headers["x-should-retry"] == "false"


def test_embeddings_and_models_errors_are_shaped_too(relay: RelayStack, http: httpx.Client) -> None:
    _assert_openai_error(
        http.post("/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers={"x-relay-test-error": "provider_error"}),
        502,
        "provider_error",
    )
    _assert_openai_error(httpx.get(f"{relay.base_url}/models"), 401, "invalid_api_key")
    _assert_openai_error(http.get("/models/not-a-model"), 404, "model_not_found")


def test_mid_stream_failure_is_an_in_band_error_not_a_truncation(client: OpenAI, http: httpx.Client) -> None:
    headers = {"x-relay-test-error": "provider_error", "x-relay-test-error-after": "2"}
    with pytest.raises(openai.APIError) as info:
        for _ in client.chat.completions.create(**CHAT, stream=True, extra_headers=headers):
            pass
    assert "provider" in str(info.value.message).lower() or info.value.body
    with http.stream("POST", "/chat/completions", json={**CHAT, "stream": True}, headers=headers) as response:
        assert response.status_code == 200
        frames = [f for f in b"".join(response.iter_bytes()).split(b"\n\n") if f]
    assert len(frames) == 3
    assert json.loads(frames[-1][6:])["error"]["code"] == "provider_error"


@pytest.mark.parametrize(("tenant_status", "status", "code"), [
    ("suspended", 402, "tenant_suspended"),
    ("expired", 402, "tenant_suspended"),
    ("provisioning", 503, "tenant_provisioning"),
    ("deleted", 401, "invalid_api_key"),
])
def test_tenant_status_decides_access(relay: RelayStack, tenant_status: str, status: int, code: str) -> None:
    key = mint_key("test")
    tenant = f"ten_{tenant_status}"
    with psycopg.connect(relay.db.owner_dsn) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, status, deleted_at) VALUES (%s, %s, %s, %s, "
            "CASE WHEN %s = 'deleted' THEN now() END) ON CONFLICT (id) DO NOTHING",
            (tenant, tenant_status, tenant_status.title(), tenant_status, tenant_status),
        )
        conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment) "
            "VALUES (%s, %s, 'k', %s, %s, %s, 'test')",
            (f"key_{key.key_hash[:10]}", tenant, key.key_prefix, key.key_hash, key.key_hint),
        )
    response = httpx.post(f"{relay.base_url}/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key.secret}"})
    error = _assert_openai_error(response, status, code)
    if status == 402:
        assert "billing" in error["message"]
        assert response.headers["x-should-retry"] == "false"


def test_request_metadata_header_is_logged_and_validated(relay: RelayStack, http: httpx.Client) -> None:
    import time

    tags = {"feature": "search", "tier": "pro"}
    response = http.post("/chat/completions", json=CHAT, headers={"x-relay-metadata": json.dumps(tags)})
    assert response.status_code == 200
    row = None
    for _ in range(250):  # the request log is written in batches, off the request path
        with psycopg.connect(relay.db.owner_dsn) as conn:
            row = conn.execute(
                "SELECT request_metadata FROM requests WHERE id = %s", (response.headers["x-request-id"],)
            ).fetchone()
        if row is not None:
            break
        time.sleep(0.02)
    assert row is not None and row[0]["tags"] == tags
    bad = http.post("/chat/completions", json=CHAT, headers={"x-relay-metadata": "[1, 2]"})
    error = _assert_openai_error(bad, 400, "invalid_header")
    assert "x-relay-metadata" in error["message"]
