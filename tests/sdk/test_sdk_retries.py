"""Retries: only transient failures, only calls that are safe to repeat, honouring retry-after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import relay_sdk as sdk
from relay_proto.relay.admin.v1 import api_keys_pb2
from relay_sdk import AsyncRelay, Relay, RetryPolicy
from relay_sdk._retry import is_idempotent
from relay_server.errors import ErrorKind
from relay_server.errors import RelayError as ServerError
from tests.sdk.conftest import ADMIN_TOKEN, Faults, Services, SleepRecorder

grpc_max_workers = 8

UNAVAILABLE = ServerError(ErrorKind.NO_PROVIDER_AVAILABLE, "try again")
PROVISIONING = ServerError(ErrorKind.TENANT_PROVISIONING, "not ready", retry_after_s=3)
RATE_LIMITED = ServerError(ErrorKind.RATE_LIMIT_EXCEEDED, "slow down", retry_after_s=2)


@pytest.fixture
def client(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> Iterator[Relay]:
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, timeout=5.0, retry_policy=retry_policy) as relay:
        yield relay


def test_a_read_is_retried_on_unavailable_with_growing_jittered_backoff(
    client: Relay, faults: Faults, sleeps: SleepRecorder
) -> None:
    faults.fail_next("GetApiKey", 2, UNAVAILABLE)
    reply = client.api_keys.get_api_key(key_id="key_2")
    assert reply.api_key.id == "key_2"
    assert faults.calls["GetApiKey"] == 3
    first, second = sleeps.waits
    assert 0.01 * 0.75 <= first <= 0.01 and 0.02 * 0.75 <= second <= 0.02


def test_retry_after_from_the_server_is_honoured(client: Relay, faults: Faults, sleeps: SleepRecorder) -> None:
    faults.fail_next("ListApiKeys", 1, RATE_LIMITED)
    faults.fail_next("GetApiKey", 1, PROVISIONING)
    client.api_keys.list_api_keys()
    client.api_keys.get_api_key(key_id="key_1")
    assert sleeps.waits == [2.0, 3.0]


def test_retries_stop_after_max_retries_with_the_last_error(client: Relay, faults: Faults) -> None:
    faults.fail_next("GetApiKey", 3, UNAVAILABLE)
    with pytest.raises(sdk.NoProviderAvailableError):
        client.api_keys.get_api_key(key_id="key_1")
    assert faults.calls["GetApiKey"] == 3


def test_max_retries_zero_disables_retries(grpc_addr: str, services: Services, faults: Faults) -> None:
    faults.fail_next("GetApiKey", 1, UNAVAILABLE)
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, max_retries=0) as relay:
        with pytest.raises(sdk.ServiceUnavailableError):
            relay.api_keys.get_api_key(key_id="key_1")
    assert faults.calls["GetApiKey"] == 1


def test_the_default_sleep_really_waits_and_then_succeeds(grpc_addr: str, services: Services, faults: Faults) -> None:
    faults.fail_next("GetApiKey", 1, UNAVAILABLE)
    policy = RetryPolicy(initial_backoff=0.01)
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, retry_policy=policy) as relay:
        assert relay.api_keys.get_api_key(key_id="key_1").api_key.id == "key_1"
    assert faults.calls["GetApiKey"] == 2


def test_a_retry_after_beyond_the_cap_or_the_deadline_is_not_waited_for(
    grpc_addr: str, services: Services, faults: Faults, sleeps: SleepRecorder
) -> None:
    faults.fail_next("ListApiKeys", 2, RATE_LIMITED)  # asks for 2 s
    capped = RetryPolicy(max_retry_after=1.0, sleep=sleeps)
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, retry_policy=capped) as relay:
        with pytest.raises(sdk.RateLimitError) as info:
            relay.api_keys.list_api_keys()
    assert info.value.retry_after == 2.0
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, timeout=1.0, retry_policy=RetryPolicy(sleep=sleeps)) as relay:
        with pytest.raises(sdk.RateLimitError):
            relay.api_keys.list_api_keys()
    assert faults.calls["ListApiKeys"] == 2 and sleeps.waits == []


def test_a_create_without_request_id_is_not_retried(client: Relay, services: Services, faults: Faults) -> None:
    faults.fail_next("CreateApiKey", 1, UNAVAILABLE)
    with pytest.raises(sdk.NoProviderAvailableError):
        client.api_keys.create_api_key(tenant_id="t1", api_key={"name": "ci"})
    assert faults.calls["CreateApiKey"] == 1 and services.api_keys.created == []


def test_a_create_with_request_id_is_retried(client: Relay, services: Services, faults: Faults) -> None:
    faults.fail_next("CreateApiKey", 1, UNAVAILABLE)
    reply = client.api_keys.create_api_key(tenant_id="t1", api_key={"name": "ci"}, request_id="req-123")
    assert reply.api_key.name == "ci" and reply.secret
    assert faults.calls["CreateApiKey"] == 2
    assert [r.request_id for r in services.api_keys.created] == ["req-123"]


def test_an_upsert_follows_the_same_rule(client: Relay, services: Services, faults: Faults) -> None:
    faults.fail_next("UpsertCatalogModel", 2, RATE_LIMITED)
    with pytest.raises(sdk.RateLimitError):
        client.model_catalog.upsert_catalog_model(model={"id": "m1"})
    client.model_catalog.upsert_catalog_model(model={"id": "m1"}, request_id="r-1")
    assert faults.calls["UpsertCatalogModel"] == 3 and len(services.catalog.upserts) == 1


@pytest.mark.parametrize(
    "error",
    [
        ServerError(ErrorKind.QUOTA_EXCEEDED, "quota"),  # 402-style FAILED_PRECONDITION
        ServerError(ErrorKind.NOT_FOUND, "gone"),
        ServerError(ErrorKind.INTERNAL, "bug"),
        ServerError(ErrorKind.REQUEST_TIMEOUT, "slow"),
    ],
    ids=lambda e: e.kind.name,
)
def test_terminal_errors_are_not_retried_even_on_reads(client: Relay, faults: Faults, error: ServerError) -> None:
    faults.fail_next("ListApiKeys", 1, error)
    with pytest.raises(sdk.RelayError) as info:
        client.api_keys.list_api_keys()
    assert info.value.reason == error.code
    assert faults.calls["ListApiKeys"] == 1


def test_inference_is_never_retried(client: Relay, faults: Faults) -> None:
    faults.fail_next("CreateChatCompletion", 1, UNAVAILABLE)
    faults.fail_next("StreamChatCompletion", 1, UNAVAILABLE)
    with pytest.raises(sdk.NoProviderAvailableError):
        client.chat("gpt-test", [{"role": "user", "content": "hi"}])
    with pytest.raises(sdk.NoProviderAvailableError):
        list(client.chat_stream("gpt-test", [{"role": "user", "content": "hi"}]))
    assert faults.calls["CreateChatCompletion"] == 1 and faults.calls["StreamChatCompletion"] == 1


@pytest.mark.parametrize(
    ("method", "request_id", "expected"),
    [
        ("GetApiKey", "", True),
        ("ListApiKeys", "", True),
        ("CreateApiKey", "", False),
        ("CreateApiKey", "r1", True),
        ("RevokeApiKey", "", False),
        ("RevokeApiKey", "r1", True),
        ("RotateApiKey", "", False),
        ("UpdateApiKey", "", False),
    ],
)
def test_idempotency_rule(method: str, request_id: str, expected: bool) -> None:
    request_type = getattr(api_keys_pb2, f"{method}Request")
    request = request_type(request_id=request_id) if request_id else request_type()
    assert is_idempotent(method, request) is expected


@pytest.mark.asyncio
async def test_async_reads_are_retried_with_retry_after(
    grpc_addr: str, services: Services, faults: Faults, sleeps: SleepRecorder, retry_policy: RetryPolicy
) -> None:
    faults.fail_next("ListCatalogModels", 1, RATE_LIMITED)
    faults.fail_next("CreateApiKey", 1, UNAVAILABLE)
    async with AsyncRelay(grpc_addr, admin_token=ADMIN_TOKEN, retry_policy=retry_policy) as relay:
        page = await relay.model_catalog.list_catalog_models(page_size=2)
        with pytest.raises(sdk.NoProviderAvailableError):
            await relay.api_keys.create_api_key(api_key={"name": "x"})
    assert len(page.models) == 2
    assert sleeps.waits == [2.0]
    assert faults.calls["ListCatalogModels"] == 2 and faults.calls["CreateApiKey"] == 1


def test_a_provisioning_tenant_is_waited_for_even_by_a_call_without_request_id(
    client: Relay, faults: Faults, sleeps: SleepRecorder
) -> None:
    """The server refuses before acting while a tenant is provisioning, so repeating is safe:
    `create_tenant` then `create_api_key` right away just works."""
    faults.fail_next("CreateApiKey", 4, PROVISIONING)  # more than max_retries
    reply = client.api_keys.create_api_key(tenant_id="ten_1", api_key={"name": "first"})
    assert reply.api_key.name == "first" and faults.calls["CreateApiKey"] == 5
    assert sleeps.waits == [3.0] * 4  # the server's retry-after


def test_provisioning_waits_are_bounded(grpc_addr: str, services: Services, faults: Faults, sleeps: SleepRecorder) -> None:
    policy = RetryPolicy(provisioning_retries=2, sleep=sleeps, async_sleep=sleeps.async_sleep)
    faults.fail_next("CreateApiKey", 5, PROVISIONING)
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, retry_policy=policy) as relay:
        with pytest.raises(sdk.TenantProvisioningError):
            relay.api_keys.create_api_key(tenant_id="ten_1", api_key={"name": "first"})
    assert faults.calls["CreateApiKey"] == 3
