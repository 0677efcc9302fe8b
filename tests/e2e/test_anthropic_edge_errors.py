"""Errors Envoy makes itself (unknown URL, body over the limit, unparsable JSON) are Anthropic-shaped on the Anthropic door.

The Anthropic SDK sends ``anthropic-version`` on every call and parses
``{"type": "error", "error": {"type", "message"}}``; an OpenAI-shaped body
there would surface as an unreadable error.
"""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}


@pytest.fixture(scope="module")
def door(relay: RelayStack) -> httpx.Client:
    with httpx.Client(base_url=relay.base_url, headers={"x-api-key": relay.test_key, **HEADERS}, timeout=60) as c:
        yield c


def _assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["error"]["message"]
    assert not any(name.startswith(("grpc-", "x-relay-")) for name in response.headers)
    return body


def test_unknown_url_is_an_anthropic_not_found(door: httpx.Client) -> None:
    body = _assert_anthropic_error(door.post("/messages/nope", json={}), 404, "not_found_error")
    assert "/v1/messages/nope" in body["error"]["message"]


def test_body_over_the_limit_is_an_anthropic_request_too_large(door: httpx.Client) -> None:
    huge = b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "' + b"a" * (33 * 1024 * 1024) + b'"}]}'
    _assert_anthropic_error(door.post("/messages", content=huge), 413, "request_too_large")


@pytest.mark.parametrize("content", [b"{not json", b'{"model": "claude-x", "messages": [{"content": "\xff\xfe"}]}'])
def test_unparsable_json_is_an_anthropic_invalid_request(door: httpx.Client, content: bytes) -> None:
    _assert_anthropic_error(door.post("/messages", content=content), 400, "invalid_request_error")


def test_the_sdk_raises_its_own_classes_for_envoy_errors(relay: RelayStack) -> None:
    client = anthropic.Anthropic(base_url=relay.base_url.removesuffix("/v1"), api_key=relay.test_key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.post("/v1/messages/nope", body={}, cast_to=httpx.Response)
    assert missing.value.body["error"]["type"] == "not_found_error"


def test_openai_paths_keep_the_openai_shape(relay: RelayStack) -> None:
    with httpx.Client(base_url=relay.base_url, timeout=30) as plain:
        response = plain.post("/nope", json={})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"
