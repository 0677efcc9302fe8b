"""The one place a ``RelayError`` becomes wire format.

gRPC clients get a real status code plus a ``google.rpc.Status`` with an
``ErrorInfo`` (reason = the error code).  REST clients get, through Envoy's Lua
filter, the exact HTTP status from ``x-relay-http-status`` and the OpenAI body
from ``x-relay-error``.  Both ride in the trailers of a trailers-only response,
which is why nothing may send initial metadata before an error is known.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, NoReturn

import grpc
import orjson
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from relay_server.errors import ErrorKind, RelayError

log = logging.getLogger(__name__)

ERROR_DOMAIN = "relay.gateway"


def as_relay_error(exc: BaseException) -> RelayError:
    """Any exception → a RelayError; unexpected ones leak no detail to the client."""
    if isinstance(exc, RelayError):
        return exc
    log.exception("unhandled error", exc_info=exc)
    return RelayError(ErrorKind.INTERNAL, "The server had an error while processing your request.")


ErrorShape = Callable[[RelayError], tuple[int, dict[str, Any]]]
"""A door's error dialect: the HTTP status and body its clients expect for an error."""


def openai_shape(err: RelayError) -> tuple[int, dict[str, Any]]:
    return err.http_status, err.body()


def anthropic_shape(err: RelayError) -> tuple[int, dict[str, Any]]:
    return err.anthropic()


def _ascii_json(body: dict[str, Any]) -> str:
    # ASCII only: the body travels as a gRPC metadata value.
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"))


def response_headers(err: RelayError, request_id: str) -> list[tuple[str, str]]:
    """Headers a REST client sees with this error (besides status and body)."""
    headers = [("x-request-id", request_id)]
    if err.retry_after_s is not None:
        headers.append(("retry-after", str(max(0, int(err.retry_after_s)))))
    if not err.retryable:
        # The openai SDK honours this and does not retry terminal errors (402 especially).
        headers.append(("x-should-retry", "false"))
    headers.extend((k.lower(), v) for k, v in err.headers.items())
    return headers


def trailing_metadata(
    err: RelayError, request_id: str, shape: ErrorShape | None = None
) -> list[tuple[str, str | bytes]]:
    http_status, body = (shape or openai_shape)(err)
    info = error_details_pb2.ErrorInfo(
        reason=err.code.upper(),
        domain=ERROR_DOMAIN,
        metadata={"http_status": str(err.http_status), "type": err.kind.value.type, "request_id": request_id},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=err.kind.grpc_status.value[0], message=err.message, details=[detail])
    metadata: list[tuple[str, str | bytes]] = [
        ("x-relay-http-status", str(http_status)),
        ("x-relay-error", _ascii_json(body)),
        ("grpc-status-details-bin", status.SerializeToString()),
    ]
    metadata.extend(response_headers(err, request_id))
    return metadata


async def abort(
    context: grpc.aio.ServicerContext, err: RelayError, request_id: str, shape: ErrorShape | None = None
) -> NoReturn:
    """End the call with ``err``: its gRPC status, and the door's HTTP status and body for Envoy."""
    metadata = tuple(trailing_metadata(err, request_id, shape))
    await context.abort(err.kind.grpc_status, err.message, trailing_metadata=metadata)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def sse_error_frame(err: RelayError) -> bytes:
    """The in-band error event for failures after the first frame was sent."""
    return b"data: " + orjson.dumps(err.body()) + b"\n\n"


def anthropic_error_event(err: RelayError) -> bytes:
    """The Anthropic door's in-band error: ``event: error`` with Anthropic's error body."""
    return b"event: error\ndata: " + orjson.dumps(err.anthropic()[1]) + b"\n\n"
