"""Every error kind of the server reaches the caller as the right RelayError subclass, fully described."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

import relay_sdk as sdk
from relay_sdk import Relay, RetryPolicy
from relay_server.errors import ErrorKind
from tests.sdk.conftest import API_KEY, REQUEST_ID, Faults, Services

grpc_max_workers = 8

# Written out here, not derived from the SDK's tables, so a wrong table fails.
EXPECTED: dict[ErrorKind, type[sdk.RelayError]] = {
    ErrorKind.INVALID_JSON: sdk.BadRequestError,
    ErrorKind.BAD_REQUEST: sdk.BadRequestError,
    ErrorKind.INVALID_API_KEY: sdk.AuthenticationError,
    ErrorKind.TENANT_SUSPENDED: sdk.TenantSuspendedError,
    ErrorKind.QUOTA_EXCEEDED: sdk.QuotaExceededError,
    ErrorKind.SPEND_CAP_EXCEEDED: sdk.SpendCapExceededError,
    ErrorKind.PERMISSION_DENIED: sdk.PermissionDeniedError,
    ErrorKind.MODEL_NOT_FOUND: sdk.ModelNotFoundError,
    ErrorKind.NOT_FOUND: sdk.NotFoundError,
    ErrorKind.CONFLICT: sdk.ConflictError,
    ErrorKind.FAILED_PRECONDITION: sdk.ConflictError,
    ErrorKind.REQUEST_TOO_LARGE: sdk.RequestTooLargeError,
    ErrorKind.INVALID_REQUEST: sdk.UnprocessableEntityError,
    ErrorKind.RATE_LIMIT_EXCEEDED: sdk.RateLimitError,
    ErrorKind.INTERNAL: sdk.InternalServerError,
    ErrorKind.UNIMPLEMENTED: sdk.UnimplementedError,
    ErrorKind.PROVIDER_ERROR: sdk.ProviderError,
    ErrorKind.NO_PROVIDER_AVAILABLE: sdk.NoProviderAvailableError,
    ErrorKind.TENANT_PROVISIONING: sdk.TenantProvisioningError,
    ErrorKind.REQUEST_TIMEOUT: sdk.RequestTimeoutError,
}


@pytest.fixture
def client(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> Iterator[Relay]:
    with Relay(grpc_addr, api_key=API_KEY, timeout=5.0, retry_policy=retry_policy) as relay:
        yield relay


def test_the_table_covers_every_error_kind() -> None:
    assert set(EXPECTED) == set(ErrorKind)


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.name)
def test_each_error_kind_becomes_its_subclass_with_every_detail(client: Relay, faults: Faults, kind: ErrorKind) -> None:
    with pytest.raises(sdk.RelayError) as info:
        client.chat(f"error:{kind.name}", [{"role": "user", "content": "hi"}])
    err = info.value
    assert type(err) is EXPECTED[kind]
    assert err.code is kind.grpc_status
    assert err.reason == kind.value.code
    assert err.http_status == kind.http_status
    assert err.type == kind.value.type
    assert err.request_id == REQUEST_ID
    assert err.message == f"injected {kind.name.lower()}"
    assert err.body is not None and err.body["code"] == kind.value.code and err.body["message"] == err.message
    assert err.metadata["x-relay-http-status"] == str(kind.http_status)
    assert err.retry_after == (7.0 if kind is ErrorKind.RATE_LIMIT_EXCEEDED else None)
    assert isinstance(err.__cause__, grpc.RpcError)
    assert REQUEST_ID in str(err) and kind.value.code in str(err)
    # Inference costs money: never repeated, whatever the error.
    assert faults.calls["CreateChatCompletion"] == 1


def test_payment_errors_share_a_base_class_and_say_do_not_retry(client: Relay) -> None:
    with pytest.raises(sdk.PaymentRequiredError) as info:
        client.chat("error:spend_cap_exceeded", [{"role": "user", "content": "hi"}])
    assert info.value.http_status == 402 and info.value.should_retry is False


def test_an_unknown_error_code_falls_back_to_the_http_status(client: Relay) -> None:
    # A provider's own code passed through on a 400: no SDK class knows the code.
    with pytest.raises(sdk.BadRequestError) as info:
        client.chat("error:bad_request:context_length_exceeded", [{"role": "user", "content": "hi"}])
    assert type(info.value) is sdk.BadRequestError
    assert info.value.reason == "context_length_exceeded" and info.value.http_status == 400


def test_400_and_422_share_a_code_but_not_a_class(client: Relay) -> None:
    with pytest.raises(sdk.RelayError) as bad:
        client.chat("error:bad_request", [{"role": "user", "content": "hi"}])
    with pytest.raises(sdk.RelayError) as unprocessable:
        client.chat("error:invalid_request", [{"role": "user", "content": "hi"}])
    assert bad.value.reason == unprocessable.value.reason == "invalid_request"
    assert type(bad.value) is sdk.BadRequestError and type(unprocessable.value) is sdk.UnprocessableEntityError


def test_the_body_is_the_openai_error_object(client: Relay) -> None:
    with pytest.raises(sdk.ModelNotFoundError) as info:
        client.chat("error:model_not_found", [{"role": "user", "content": "hi"}])
    wire = json.loads(info.value.metadata["x-relay-error"])  # type: ignore[arg-type]
    assert info.value.body == wire["error"]
    assert isinstance(info.value, sdk.NotFoundError)


def test_an_unreachable_server_is_service_unavailable_after_the_retries(retry_policy: RetryPolicy, sleeps: object) -> None:
    from relay_server.stack.processes import free_port

    with Relay(f"127.0.0.1:{free_port()}", timeout=5.0, retry_policy=retry_policy) as relay:
        with pytest.raises(sdk.ServiceUnavailableError) as info:
            relay.models.list_models()
    assert info.value.code is grpc.StatusCode.UNAVAILABLE and info.value.reason is None
    assert len(sleeps.waits) == 2  # type: ignore[attr-defined]  (a read: retried max_retries times)
