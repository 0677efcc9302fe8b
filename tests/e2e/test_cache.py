"""The response cache through Envoy: headers, SSE replay, tenant isolation, semantic hits.

"Zero provider calls" is shown black-box: the repeated request carries
``x-relay-test-error: provider_error``, which fails any request that reaches
the (test-mode) provider; a cache hit never does.
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import httpx
import psycopg
import pytest
from openai import OpenAI

from tests.integration.test_cache_harness import add_tenant
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

TTL = {"x-relay-cache-ttl": "300"}
FAIL = {"x-relay-test-error": "provider_error"}


def _body(question: str, **extra: object) -> dict:
    return {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": question}], **extra}


def _question() -> str:
    return f"What is the answer to question {uuid.uuid4().hex[:8]}?"


def test_the_second_identical_request_is_a_hit_that_never_reaches_the_provider(http: httpx.Client) -> None:
    body = _body(_question())
    assert http.post("/chat/completions", json=body, headers=FAIL).status_code == 502  # the header does fail a miss
    first = http.post("/chat/completions", json=body, headers=TTL)
    assert first.status_code == 200 and first.headers["x-relay-cache"] == "miss"
    second = http.post("/chat/completions", json=body, headers={**TTL, **FAIL})
    assert second.status_code == 200, second.text
    assert second.headers["x-relay-cache"] == "hit" and second.headers["x-relay-cache-kind"] == "exact"
    assert second.json() == first.json()


def test_a_hit_is_logged_as_cached_and_billed_nothing(relay: RelayStack, http: httpx.Client) -> None:
    body = _body(_question())
    http.post("/chat/completions", json=body, headers=TTL)
    request_id = http.post("/chat/completions", json=body, headers=TTL).headers["x-request-id"]
    row = None
    for _ in range(250):  # the request log is written in batches, off the request path
        with psycopg.connect(relay.db.owner_dsn) as conn:
            row = conn.execute(
                "SELECT status, provider_id, cost_micros, output_tokens, request_metadata, cache_hit, cache_kind, cache_key"
                " FROM requests WHERE id = %s",
                (request_id,),
            ).fetchone()
        if row is not None:
            break
        time.sleep(0.02)
    assert row is not None
    status, provider_id, cost_micros, output_tokens, metadata, cache_hit, cache_kind, cache_key = row
    assert (status, provider_id, cost_micros) == ("cached", None, 0) and output_tokens > 0
    assert metadata["usage_source"] == "cache"
    assert (cache_hit, cache_kind) == (True, "exact") and cache_key
    assert Decimal(metadata["cost_saved"]) > 0, "the cost the hit saved is recorded"


def test_a_hit_streams_as_proper_sse(http: httpx.Client) -> None:
    body = _body(_question())
    plain = http.post("/chat/completions", json=body, headers=TTL).json()
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/chat/completions", json=streamed, headers={**TTL, **FAIL}) as response:
        assert response.status_code == 200 and response.headers["x-relay-cache"] == "hit"
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in b"".join(response.iter_bytes()).split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    chunks = [json.loads(f[len(b"data: "):]) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == plain["usage"]


def test_the_openai_sdk_sees_the_cache_header(client: OpenAI) -> None:
    body = _body(_question())
    client.chat.completions.create(**body, extra_headers=TTL)
    raw = client.chat.completions.with_raw_response.create(**body, extra_headers={**TTL, **FAIL})
    assert raw.headers["x-relay-cache"] == "hit"
    assert raw.parse().choices[0].message.content


def test_another_tenant_never_sees_the_cached_answer(relay: RelayStack, http: httpx.Client) -> None:
    other_key = add_tenant(relay.db.owner_dsn, f"ten_e2e_{uuid.uuid4().hex[:6]}")
    body = _body(_question())
    assert http.post("/chat/completions", json=body, headers=TTL).headers["x-relay-cache"] == "miss"
    theirs = http.post("/chat/completions", json=body, headers={**TTL, **FAIL, "authorization": f"Bearer {other_key}"})
    assert theirs.status_code == 502  # reached the provider: no entry of the first tenant was served


def test_a_reworded_question_is_a_semantic_hit(http: httpx.Client) -> None:
    question = _question()
    http.post("/chat/completions", json=_body(question), headers=TTL)
    reworded = _body("   " + question.upper().replace(" ", "  "))
    response = http.post("/chat/completions", json=reworded, headers={**TTL, **FAIL})
    assert response.status_code == 200, response.text
    assert response.headers["x-relay-cache"] == "hit" and response.headers["x-relay-cache-kind"] == "semantic"


def test_sampled_requests_bypass_and_a_bad_ttl_is_a_400(http: httpx.Client) -> None:
    sampled = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": _question()}]}
    for _ in range(2):
        response = http.post("/chat/completions", json=sampled, headers=TTL)
        assert response.headers["x-relay-cache"] == "bypass"
    assert "x-relay-cache" not in http.post("/chat/completions", json=_body(_question())).headers
    bad = http.post("/chat/completions", json=_body(_question()), headers={"x-relay-cache-ttl": "an hour"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_header"
