"""Observability through the real stack (openai SDK → Envoy → server): the request id and overhead
headers, /metrics on its own port (never through Envoy), log lines with the request's context,
and no key or admin token in the server's log."""

from __future__ import annotations

import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from openai import AuthenticationError, OpenAI

from relay_server.stack.processes import free_port
from relay_server.stack.redis import RedisHandle
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = pytest.mark.e2e

KEY_PATTERN = re.compile(r"rly_(live|test)_sk_[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    metrics_port = free_port()
    relay = start_stack(
        db, Path(tmp_path_factory.mktemp("relay-observability")), redis_url=redis_server.url,
        extra_env={"RELAY_METRICS_PORT": str(metrics_port), "RELAY_LOG_LEVEL": "DEBUG"},
    )  # fmt: skip
    relay.metrics_port = metrics_port  # type: ignore[attr-defined]
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


def _client(stack: RelayStack, key: str | None = None) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key=key or stack.test_key, max_retries=0, timeout=30)


def _metrics(stack: RelayStack) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5) as response:  # type: ignore[attr-defined]
        return response.read().decode()


def _log(stack: RelayStack) -> str:
    return (stack.workdir / "server.log").read_text(errors="replace")


def test_responses_carry_the_request_id_and_relay_overhead(stack: RelayStack) -> None:
    raw = _client(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-request-id"].startswith("req_")
    assert 0 <= float(raw.headers["x-relay-overhead-ms"]) < 10_000
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {stack.test_key}"}
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["x-request-id"].startswith("req_")
        assert float(response.headers["x-relay-overhead-ms"]) >= 0
        assert "data: [DONE]" in response.read().decode()
    embedded = _client(stack).embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
    assert float(embedded.headers["x-relay-overhead-ms"]) >= 0


def test_metrics_are_served_on_their_own_port_and_not_through_envoy(stack: RelayStack) -> None:
    before = _metrics(stack)
    _client(stack).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}])

    def successes(text: str) -> float:
        pattern = r'relay_requests_total\{kind="chat",model="gpt-4o-mini",provider="test",status="success"\} (\S+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    deadline_text = _metrics(stack)
    for _ in range(100):  # metering may land just after the response
        if successes(deadline_text) > successes(before):
            break
        deadline_text = _metrics(stack)
    assert successes(deadline_text) == successes(before) + 1
    assert "relay_overhead_seconds_bucket" in deadline_text
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info",
                   "python_gc_collections_total"):  # fmt: skip
        assert re.search(rf"^{family}(\{{[^}}]*\}})? \S+$", deadline_text, re.M), family
    assert httpx.get(f"{stack.base_url.removesuffix('/v1')}/metrics", timeout=10).status_code == 404
    assert httpx.get(f"{stack.base_url}/metrics", timeout=10).status_code == 404


def test_log_lines_carry_the_request_context_and_never_a_secret(stack: RelayStack) -> None:
    # A failing request: the failover loop logs a line that names only the request id itself.
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        failed = http.post(
            "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"my key is {stack.test_key}"}]},
            headers={"authorization": f"Bearer {stack.test_key}", "x-relay-test-error": "provider_error"},
        )  # fmt: skip
        assert failed.status_code == 502
        request_id = failed.headers["x-request-id"]
    unknown = "rly_test_sk_" + secrets.token_urlsafe(32)
    with pytest.raises(AuthenticationError):
        _client(stack, unknown).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.http_port}", timeout=30) as admin:
        created = admin.post(
            "/v1/tenants", json={"slug": "obs-logs", "name": "Obs", "owner_email": "o@obs.test"},
            headers={"authorization": f"Bearer {stack.admin_token}"},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        refused = admin.get("/v1/tenants", headers={"authorization": f"Bearer {stack.admin_token}x"})
        assert refused.status_code in (401, 403)
    minted = {m.group(0) for m in KEY_PATTERN.finditer(created.text)}
    assert minted, "the new tenant's first key is in the response (and must not be in the log)"

    # Info lines are written in batches (at most ~0.1 s late): wait for the request's own line.
    deadline = time.monotonic() + 10
    while True:
        log = _log(stack)
        lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
        mine = [entry for entry in lines if entry.get("request_id") == request_id]
        if any(entry["msg"] == "request" for entry in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for secret in (stack.test_key, unknown, stack.admin_token, *minted):
        assert secret not in log
    assert {"provider attempt failed", "request"} <= {entry["msg"] for entry in mine}
    tenant_ids = {entry.get("tenant_id") for entry in mine}
    assert len(tenant_ids) == 1 and None not in tenant_ids
    for entry in mine:
        assert entry["key_hint"] == stack.test_key[-4:] and entry["model"] == "gpt-4o-mini" and entry["provider"] == "test"
