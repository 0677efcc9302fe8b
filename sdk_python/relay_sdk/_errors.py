"""Relay's errors as Python exceptions.

The server answers every failure with a gRPC status whose trailing metadata
carries ``grpc-status-details-bin`` (a ``google.rpc.Status`` holding one
``google.rpc.ErrorInfo``: reason = the upper-cased error code, metadata
``http_status``/``type``/``request_id``), ``x-relay-http-status``,
``x-relay-error`` (the OpenAI error body), ``retry-after`` and ``x-request-id``.
:func:`from_rpc_error` reads all of it and picks the subclass by the reason,
then by the HTTP status, then by the gRPC code (for failures that never reached
Relay, e.g. a refused connection).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status

ERROR_DOMAIN = "relay.gateway"
MetadataDict = dict[str, str | bytes]


class RelayError(Exception):
    """Any failed Relay call.

    Attributes:
        code: the gRPC status code.
        reason: Relay's error code, lower-case (``"rate_limit_exceeded"``), or None when the
            failure did not come from Relay.
        message: the human-readable message.
        http_status: the HTTP status a REST client would have seen, when known.
        type: OpenAI's ``error.type`` (``"rate_limit_error"``), when known.
        request_id: the server's request id (quote it in support requests).
        retry_after: seconds the server asked the client to wait, when it said so.
        metadata: the response metadata (initial and trailing), lower-case keys.
        body: the OpenAI error object (``{"message", "type", "param", "code", ...}``), when sent.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str | None = None,
        http_status: int | None = None,
        type: str | None = None,  # noqa: A002  (OpenAI's field name)
        request_id: str | None = None,
        retry_after: float | None = None,
        metadata: Mapping[str, str | bytes] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.http_status = http_status
        self.type = type
        self.request_id = request_id
        self.retry_after = retry_after
        self.metadata: MetadataDict = dict(metadata or {})
        self.body: dict[str, Any] | None = dict(body) if body is not None else None

    @property
    def should_retry(self) -> bool | None:
        """The server's ``x-should-retry`` hint (False on terminal errors such as 402), if sent."""
        value = self.metadata.get("x-should-retry")
        return None if value is None else str(value).lower() == "true"

    def __str__(self) -> str:
        label = self.reason or self.code.name
        suffix = f" (request_id={self.request_id})" if self.request_id else ""
        return f"[{label}] {self.message}{suffix}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"


class BadRequestError(RelayError):
    """400: the request is malformed or invalid."""


class AuthenticationError(RelayError):
    """401: the API key or admin token is missing, unknown or revoked."""


class PaymentRequiredError(RelayError):
    """402: the tenant may not spend (suspended, quota or spend cap). Never retried."""


class TenantSuspendedError(PaymentRequiredError):
    """402 ``tenant_suspended``."""


class QuotaExceededError(PaymentRequiredError):
    """402 ``quota_exceeded``: a plan quota is used up for this period."""


class SpendCapExceededError(PaymentRequiredError):
    """402 ``spend_cap_exceeded``: the key's or tenant's spend cap is reached."""


class PermissionDeniedError(RelayError):
    """403: the credential is valid but may not do this."""


class NotFoundError(RelayError):
    """404: the resource does not exist (or is not visible to the caller)."""


class ModelNotFoundError(NotFoundError):
    """404 ``model_not_found``."""


class ConflictError(RelayError):
    """409: the resource already exists or changed meanwhile."""


class RequestTooLargeError(RelayError):
    """413: the request body is over the server's limit."""


class UnprocessableEntityError(RelayError):
    """422: well-formed but semantically invalid request."""


class RateLimitError(RelayError):
    """429: a rate limit was hit; ``retry_after`` says when to come back."""


class InternalServerError(RelayError):
    """500: Relay failed unexpectedly."""


class UnimplementedError(RelayError):
    """501: the server does not implement this RPC (yet)."""


class ProviderError(RelayError):
    """502: the upstream model provider failed."""


class ServiceUnavailableError(RelayError):
    """503: Relay cannot serve the request right now (also: the server is unreachable)."""


class NoProviderAvailableError(ServiceUnavailableError):
    """503 ``no_provider_available``: every provider for the model is down or saturated."""


class TenantProvisioningError(ServiceUnavailableError):
    """503 ``tenant_provisioning``: the tenant is still being set up."""


class RequestTimeoutError(RelayError, TimeoutError):
    """504 / DEADLINE_EXCEEDED: the request took too long (also a builtin ``TimeoutError``)."""


_BY_REASON: dict[str, type[RelayError]] = {
    "invalid_json": BadRequestError,
    "invalid_api_key": AuthenticationError,
    "tenant_suspended": TenantSuspendedError,
    "quota_exceeded": QuotaExceededError,
    "spend_cap_exceeded": SpendCapExceededError,
    "permission_denied": PermissionDeniedError,
    "model_not_found": ModelNotFoundError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "failed_precondition": ConflictError,
    "request_too_large": RequestTooLargeError,
    # "invalid_request" is both 400 and 422: the HTTP status decides.
    "rate_limit_exceeded": RateLimitError,
    "internal_error": InternalServerError,
    "not_implemented": UnimplementedError,
    "provider_error": ProviderError,
    "no_provider_available": NoProviderAvailableError,
    "tenant_provisioning": TenantProvisioningError,
    "request_timeout": RequestTimeoutError,
}

_BY_HTTP_STATUS: dict[int, type[RelayError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: InternalServerError,
    501: UnimplementedError,
    502: ProviderError,
    503: ServiceUnavailableError,
    504: RequestTimeoutError,
}

_BY_GRPC_CODE: dict[grpc.StatusCode, type[RelayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadRequestError,
    grpc.StatusCode.OUT_OF_RANGE: BadRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: ConflictError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitError,
    grpc.StatusCode.INTERNAL: InternalServerError,
    grpc.StatusCode.UNKNOWN: InternalServerError,
    grpc.StatusCode.DATA_LOSS: InternalServerError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeoutError,
}


def error_class(reason: str | None, http_status: int | None, code: grpc.StatusCode) -> type[RelayError]:
    """The most specific class: by reason, then HTTP status, then gRPC code."""
    if reason and reason in _BY_REASON:
        return _BY_REASON[reason]
    if http_status in _BY_HTTP_STATUS:
        return _BY_HTTP_STATUS[http_status]
    return _BY_GRPC_CODE.get(code, RelayError)


def _metadata(*parts: Iterable[tuple[str, str | bytes]] | None) -> MetadataDict:
    merged: MetadataDict = {}
    for part in parts:
        for key, value in part or ():
            merged[key.lower()] = value
    return merged


def _error_info(raw: str | bytes | None) -> ErrorInfo | None:
    if not isinstance(raw, bytes):
        return None
    try:
        status = Status.FromString(raw)
    except DecodeError:
        return None
    for detail in status.details:
        info = ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info
    return None


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return max(0.0, seconds) if seconds is not None else None


def _body(raw: str | None) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    inner = parsed.get("error", parsed)
    return inner if isinstance(inner, dict) else None


def from_rpc_error(exc: grpc.RpcError) -> RelayError:
    """Turn a failed gRPC call (sync or ``grpc.aio``) into the matching :class:`RelayError`."""
    code = _call(exc, "code") or grpc.StatusCode.UNKNOWN
    message = _call(exc, "details") or ""
    metadata = _metadata(_call(exc, "initial_metadata"), _call(exc, "trailing_metadata"))
    info = _error_info(metadata.get("grpc-status-details-bin"))
    body = _body(_text(metadata.get("x-relay-error")))
    info_md = dict(info.metadata) if info is not None else {}
    reason = info.reason.lower() if info is not None else None
    if reason is None and body is not None and isinstance(body.get("code"), str):
        reason = body["code"]
    http_status = _int(info_md.get("http_status")) or _int(_text(metadata.get("x-relay-http-status")))
    cls = error_class(reason, http_status, code)
    return cls(
        message,
        code=code,
        reason=reason,
        http_status=http_status,
        type=info_md.get("type") or (body.get("type") if body else None),
        request_id=info_md.get("request_id") or _text(metadata.get("x-request-id")),
        retry_after=_seconds(_text(metadata.get("retry-after"))),
        metadata=metadata,
        body=body,
    )


def _call(exc: grpc.RpcError, name: str) -> Any:
    # grpc.RpcError itself declares no methods; the concrete errors (sync calls,
    # grpc.aio.AioRpcError) expose code()/details()/…metadata().
    method = getattr(exc, name, None)
    try:
        return method() if callable(method) else None
    except Exception:  # noqa: BLE001  (a half-built error must not hide the original)
        return None
