"""Tenant policy changes apply on the very next request on every worker.

``relay serve --workers 2`` with Redis; a gRPC connection held by each
worker; every worker has served the key (so every policy cache holds it)
before each change.  The change goes through the REST admin API; the next
request on each worker must see it.  No waiting happens between the admin
call and those requests: the admin call returns only once every worker has
acknowledged the invalidation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from relay_server.stack.redis import RedisHandle
from tests.e2e.admin_helpers import (
    channels_on_every_worker,
    chat_request,
    chat_stub,
    rest,
    wait_for,
)
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    relay = start_stack(
        db, Path(tmp_path_factory.mktemp("relay-policy")), redis_url=redis_server.url, workers=2,
        # Long TTLs: only an invalidation can explain a change seen within the test.
        extra_env={"RELAY_JOBS_POLL_S": "0.2", "RELAY_POLICY_CACHE_TTL_S": "3600", "RELAY_AUTH_CACHE_TTL_S": "3600",
                   "RELAY_CONFIG_CACHE_TTL_S": "3600", "RELAY_CREDENTIAL_CACHE_TTL_S": "3600"},
    )  # fmt: skip
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


@pytest.fixture(scope="module")
def admin(stack: RelayStack) -> Iterator[httpx.Client]:
    with rest(stack, stack.admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def channels(stack: RelayStack) -> Iterator[list[grpc.Channel]]:
    held = channels_on_every_worker(stack)
    yield held
    for channel in held:
        channel.close()


def _tenant_with_key(admin: httpx.Client, slug: str) -> tuple[str, dict[str, Any]]:
    r = admin.post("/v1/tenants", json={"slug": slug, "name": slug.title(), "owner_email": f"owner@{slug}.test",
                                        "first_key_environment": "KEY_ENVIRONMENT_TEST"})  # fmt: skip
    assert r.status_code == 200, r.text
    tid = r.json()["tenant"]["id"]
    wait_for(lambda: admin.get(f"/v1/tenants/{tid}").json()["tenant"]["status"] == "TENANT_STATUS_TRIAL", "trial")
    r = admin.post("/v1/keys", json={"tenant_id": tid, "api_key": {"environment": "KEY_ENVIRONMENT_TEST", "name": "k"}})
    assert r.status_code == 200, r.text
    return tid, r.json()


def _chat(channel: grpc.Channel, secret: str, model: str = "gpt-4o-mini") -> str:
    """One request on this channel's worker; returns its request id."""
    request = chat_request()
    request.model = model
    reply, call = chat_stub(channel).CreateChatCompletion.with_call(request, metadata=(("authorization", f"Bearer {secret}"),))
    assert reply.choices
    return dict(call.initial_metadata())["x-request-id"]


def _refused(channel: grpc.Channel, secret: str, model: str = "gpt-4o-mini") -> tuple[int, str]:
    """(HTTP status, error code) of a request that must be refused."""
    request = chat_request()
    request.model = model
    with pytest.raises(grpc.RpcError) as info:
        chat_stub(channel).CreateChatCompletion(request, metadata=(("authorization", f"Bearer {secret}"),))
    trailers = dict(info.value.trailing_metadata() or ())
    return int(trailers["x-relay-http-status"]), json.loads(trailers["x-relay-error"])["error"]["code"]


def _warm(channels: list[grpc.Channel], secret: str) -> None:
    for channel in channels:  # every worker caches the key and its tenant's policies
        for _ in range(2):
            _chat(channel, secret)


def _markup_of(stack: RelayStack, request_id: str) -> Decimal:
    def row() -> Decimal | None:
        with psycopg.connect(stack.db.owner_dsn) as conn:
            found = conn.execute("SELECT markup_rate FROM requests WHERE id = %s", (request_id,)).fetchone()
        return found[0] if found else None

    return wait_for(row, f"request log row {request_id}")


def test_a_markup_change_prices_the_next_request_on_every_worker(
    stack: RelayStack, admin: httpx.Client, channels: list[grpc.Channel]
) -> None:
    tid, key = _tenant_with_key(admin, "pol-markup")
    _warm(channels, key["secret"])
    assert {_markup_of(stack, _chat(c, key["secret"])) for c in channels} == {Decimal("0.2000")}
    r = admin.patch(f"/v1/tenants/{tid}/config", json={"config": {"markup_rate": "0.35"}})
    assert r.status_code == 200, r.text
    assert [_markup_of(stack, _chat(c, key["secret"])) for c in channels] == [Decimal("0.3500")] * len(channels)


def test_a_tenant_spend_cap_refuses_the_next_request_on_every_worker(
    admin: httpx.Client, channels: list[grpc.Channel]
) -> None:
    tid, key = _tenant_with_key(admin, "pol-cap")
    _warm(channels, key["secret"])
    r = admin.patch(f"/v1/tenants/{tid}/config", json={"config": {"spend_cap_usd": "0.000001", "spend_cap_window": "daily"}})
    assert r.status_code == 200, r.text
    assert [_refused(c, key["secret"]) for c in channels] == [(402, "spend_cap_exceeded")] * len(channels)
    # Lifting the cap is seen as quickly.
    r = admin.patch(f"/v1/tenants/{tid}/config", json={"config": {"spend_cap_usd": ""}})
    assert r.status_code == 200, r.text
    for channel in channels:
        _chat(channel, key["secret"])


def test_a_key_quota_applies_to_the_next_request_on_every_worker(
    admin: httpx.Client, channels: list[grpc.Channel]
) -> None:
    tid, key = _tenant_with_key(admin, "pol-quota")
    _warm(channels, key["secret"])
    kid = key["api_key"]["id"]
    # One token per minute: any chat request is too large for it.
    r = admin.patch(f"/v1/keys/{kid}", params={"tenant_id": tid}, json={"rate_limits": {"tpm": 1}})
    assert r.status_code == 200, r.text
    assert [_refused(c, key["secret"]) for c in channels] == [(429, "rate_limit_exceeded")] * len(channels)


def test_a_key_spend_cap_applies_to_the_next_request_on_every_worker(
    admin: httpx.Client, channels: list[grpc.Channel]
) -> None:
    tid, key = _tenant_with_key(admin, "pol-keycap")
    _warm(channels, key["secret"])
    r = admin.patch(f"/v1/keys/{key['api_key']['id']}", params={"tenant_id": tid},
                    json={"spend_cap": {"amount_usd": "0.000001", "window": "SPEND_CAP_WINDOW_DAILY"}})  # fmt: skip
    assert r.status_code == 200, r.text
    assert [_refused(c, key["secret"]) for c in channels] == [(402, "spend_cap_exceeded")] * len(channels)


def test_a_key_allowed_models_change_applies_to_the_next_request_on_every_worker(
    admin: httpx.Client, channels: list[grpc.Channel]
) -> None:
    tid, key = _tenant_with_key(admin, "pol-models")
    _warm(channels, key["secret"])
    r = admin.patch(f"/v1/keys/{key['api_key']['id']}", params={"tenant_id": tid}, json={"allowed_models": ["gpt-4o"]})
    assert r.status_code == 200, r.text
    for channel in channels:
        status, _ = _refused(channel, key["secret"], "gpt-4o-mini")
        assert status in (403, 404)
        _chat(channel, key["secret"], "gpt-4o")
