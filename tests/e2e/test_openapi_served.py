"""Envoy itself serves docs/openapi.json at GET /v1/openapi.json, without authentication."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import REPO, RelayStack

pytestmark = pytest.mark.e2e


@pytest.fixture
def anonymous(relay: RelayStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay.base_url, trust_env=False, timeout=30) as c:
        yield c


def test_document_is_served_without_a_key(anonymous: httpx.Client) -> None:
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    # Byte for byte the checked-in file: not reshaped into an error, not truncated.
    assert response.content == (REPO / "docs" / "openapi.json").read_bytes()
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/chat/completions" in document["paths"]


def test_a_bad_key_does_not_matter_for_the_document(anonymous: httpx.Client) -> None:
    response = anonymous.get("/openapi.json", headers={"authorization": "Bearer rly_test_sk_not_a_key"})
    assert response.status_code == 200
    assert json.loads(response.content)["info"]["title"] == "Relay API"


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/openapi.json"), ("GET", "/openapi.json/x"), ("GET", "/openapi")]
)
def test_other_methods_and_near_paths_are_openai_404s(anonymous: httpx.Client, method: str, path: str) -> None:
    response = anonymous.request(method, path, content=b"{}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_the_rest_of_v1_still_needs_a_key(anonymous: httpx.Client) -> None:
    response = anonymous.get("/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
