"""RelayError → gRPC status, ErrorInfo and the REST headers Envoy turns into the OpenAI response."""

from __future__ import annotations

import json

import grpc
from google.rpc import error_details_pb2, status_pb2

from relay_server.api.error_mapping import as_relay_error, sse_error_frame, trailing_metadata
from relay_server.errors import ErrorKind, RelayError


def test_every_kind_maps_to_its_status_and_an_openai_body() -> None:
    for kind in ErrorKind:
        err = RelayError(kind, f"message for {kind.name} ünïcode \"quoted\"")
        md = dict(trailing_metadata(err, "req_1"))
        assert md["x-relay-http-status"] == str(kind.http_status)
        body = json.loads(md["x-relay-error"])
        assert md["x-relay-error"].isascii()
        assert body["error"]["message"] == err.message
        assert body["error"]["code"] == kind.value.code
        assert set(body["error"]) >= {"message", "type", "param", "code"}
        status = status_pb2.Status.FromString(md["grpc-status-details-bin"])
        assert status.code == kind.grpc_status.value[0]
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == kind.value.code.upper()
        assert md["x-request-id"] == "req_1"


def test_402_tells_the_sdk_not_to_retry_and_429_carries_retry_after() -> None:
    md = dict(trailing_metadata(RelayError(ErrorKind.SPEND_CAP_EXCEEDED, "cap"), "r"))
    assert md["x-should-retry"] == "false"
    md = dict(trailing_metadata(RelayError(ErrorKind.RATE_LIMIT_EXCEEDED, "slow down", retry_after_s=7), "r"))
    assert md["retry-after"] == "7"
    assert "x-should-retry" not in md


def test_status_codes_native_grpc_clients_see() -> None:
    assert ErrorKind.SPEND_CAP_EXCEEDED.grpc_status is grpc.StatusCode.FAILED_PRECONDITION
    assert ErrorKind.PROVIDER_ERROR.grpc_status is grpc.StatusCode.UNAVAILABLE
    assert ErrorKind.INVALID_API_KEY.grpc_status is grpc.StatusCode.UNAUTHENTICATED


def test_unexpected_exceptions_leak_nothing() -> None:
    err = as_relay_error(ValueError("secret internals rly_live_sk_abc"))
    assert err.kind is ErrorKind.INTERNAL
    assert "secret" not in err.message


def test_in_band_sse_error_frame() -> None:
    frame = sse_error_frame(RelayError(ErrorKind.PROVIDER_ERROR, "upstream broke"))
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert json.loads(frame[6:])["error"]["code"] == "provider_error"
