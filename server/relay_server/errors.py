"""Every error Relay can return, in one closed table.

Each kind fixes the HTTP status, the OpenAI ``error.type``, the default
``error.code`` and the gRPC status that native gRPC clients see.  The API layer
(``api/error_mapping.py``) is the only place that turns a ``RelayError`` into
wire metadata; everything else raises ``RelayError(kind, message)``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class _Kind:
    http_status: int
    type: str
    code: str
    grpc_status: grpc.StatusCode
    retryable: bool


class ErrorKind(enum.Enum):
    """The spec's error table, plus the HTTP-level failures a gateway must shape."""

    INVALID_JSON = _Kind(400, "invalid_request_error", "invalid_json", grpc.StatusCode.INVALID_ARGUMENT, False)
    BAD_REQUEST = _Kind(400, "invalid_request_error", "invalid_request", grpc.StatusCode.INVALID_ARGUMENT, False)
    INVALID_API_KEY = _Kind(401, "invalid_request_error", "invalid_api_key", grpc.StatusCode.UNAUTHENTICATED, False)
    TENANT_SUSPENDED = _Kind(402, "insufficient_quota", "tenant_suspended", grpc.StatusCode.FAILED_PRECONDITION, False)
    QUOTA_EXCEEDED = _Kind(402, "insufficient_quota", "quota_exceeded", grpc.StatusCode.FAILED_PRECONDITION, False)
    SPEND_CAP_EXCEEDED = _Kind(402, "insufficient_quota", "spend_cap_exceeded", grpc.StatusCode.FAILED_PRECONDITION, False)
    PERMISSION_DENIED = _Kind(403, "permission_error", "permission_denied", grpc.StatusCode.PERMISSION_DENIED, False)
    MODEL_NOT_FOUND = _Kind(404, "invalid_request_error", "model_not_found", grpc.StatusCode.NOT_FOUND, False)
    NOT_FOUND = _Kind(404, "invalid_request_error", "not_found", grpc.StatusCode.NOT_FOUND, False)
    CONFLICT = _Kind(409, "invalid_request_error", "conflict", grpc.StatusCode.ALREADY_EXISTS, False)
    # The resource exists but is in the wrong state for the call (e.g. an illegal lifecycle transition).
    FAILED_PRECONDITION = _Kind(409, "invalid_request_error", "failed_precondition", grpc.StatusCode.FAILED_PRECONDITION, False)
    REQUEST_TOO_LARGE = _Kind(413, "invalid_request_error", "request_too_large", grpc.StatusCode.INVALID_ARGUMENT, False)
    INVALID_REQUEST = _Kind(422, "invalid_request_error", "invalid_request", grpc.StatusCode.INVALID_ARGUMENT, False)
    RATE_LIMIT_EXCEEDED = _Kind(429, "rate_limit_error", "rate_limit_exceeded", grpc.StatusCode.RESOURCE_EXHAUSTED, True)
    INTERNAL = _Kind(500, "server_error", "internal_error", grpc.StatusCode.INTERNAL, True)
    UNIMPLEMENTED = _Kind(501, "server_error", "not_implemented", grpc.StatusCode.UNIMPLEMENTED, False)
    PROVIDER_ERROR = _Kind(502, "api_error", "provider_error", grpc.StatusCode.UNAVAILABLE, True)
    NO_PROVIDER_AVAILABLE = _Kind(503, "api_error", "no_provider_available", grpc.StatusCode.UNAVAILABLE, True)
    TENANT_PROVISIONING = _Kind(503, "api_error", "tenant_provisioning", grpc.StatusCode.UNAVAILABLE, True)
    REQUEST_TIMEOUT = _Kind(504, "timeout_error", "request_timeout", grpc.StatusCode.DEADLINE_EXCEEDED, True)

    @property
    def http_status(self) -> int:
        return self.value.http_status

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return self.value.grpc_status


# The Anthropic door's (HTTP status, error.type) for each kind: the same closed table in
# Anthropic's words.  Every kind has a row (a unit test checks it).  Anthropic answers every
# invalid request with 400, a billing problem with 402 ``billing_error`` (Relay's spend caps and
# quotas: terminal, ``x-should-retry: false``), and "try again later" with 529 ``overloaded_error``.
ANTHROPIC_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_JSON: (400, "invalid_request_error"),
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error"),
    ErrorKind.INVALID_API_KEY: (401, "authentication_error"),
    ErrorKind.TENANT_SUSPENDED: (402, "billing_error"),
    ErrorKind.QUOTA_EXCEEDED: (402, "billing_error"),
    ErrorKind.SPEND_CAP_EXCEEDED: (402, "billing_error"),
    ErrorKind.PERMISSION_DENIED: (403, "permission_error"),
    ErrorKind.MODEL_NOT_FOUND: (404, "not_found_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.CONFLICT: (409, "invalid_request_error"),
    ErrorKind.FAILED_PRECONDITION: (409, "invalid_request_error"),
    ErrorKind.REQUEST_TOO_LARGE: (413, "request_too_large"),
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.RATE_LIMIT_EXCEEDED: (429, "rate_limit_error"),
    ErrorKind.INTERNAL: (500, "api_error"),
    ErrorKind.UNIMPLEMENTED: (501, "api_error"),
    ErrorKind.PROVIDER_ERROR: (502, "api_error"),
    ErrorKind.NO_PROVIDER_AVAILABLE: (529, "overloaded_error"),
    ErrorKind.TENANT_PROVISIONING: (529, "overloaded_error"),
    ErrorKind.REQUEST_TIMEOUT: (504, "timeout_error"),
}

# A status a provider answered with (passed through on a 4xx) → Anthropic's type for it.
ANTHROPIC_STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
    529: "overloaded_error",
}

# A message travels in response headers (x-relay-error, grpc-message and the
# status details each carry it, the JSON form escaping non-ASCII six-fold), and
# Envoy drops a response whose headers pass its limit: a 20,000-character model
# name echoed in full turned a 404 into a 502.  Messages are clipped here, and
# a caller's value quoted in one is clipped far shorter with ``clip``.
MAX_MESSAGE_CHARS = 2000
MAX_ECHO_CHARS = 200


def clip(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` as text of at most about ``limit`` characters, saying how much was cut."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more characters)"


class RelayError(Exception):
    """A failure that reaches the client in OpenAI's error shape.

    ``code`` overrides the kind's default code (e.g. a provider's own code on a
    passed-through 4xx); ``http_status`` overrides the kind's status for the
    same reason.  ``details`` appears as ``error.details`` (rate limits, quotas).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        http_status: int | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after_s: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code or kind.value.code
        self.http_status = http_status or kind.value.http_status
        self.details = dict(details) if details else None
        self.retry_after_s = retry_after_s
        self.headers = dict(headers) if headers else {}

    @property
    def retryable(self) -> bool:
        return self.kind.value.retryable

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body: ``{"error": {message, type, param, code}}``."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.kind.value.type,
            "param": self.param,
            "code": self.code,
        }
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def anthropic(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

        A status the error carries of its own (a provider's 4xx passed through) is kept."""
        status, kind = ANTHROPIC_ERRORS[self.kind]
        if self.http_status != self.kind.value.http_status:
            status = self.http_status
            kind = ANTHROPIC_STATUS_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return status, {"type": "error", "error": {"type": kind, "message": self.message}}

    def __repr__(self) -> str:
        return f"RelayError({self.kind.name}, {self.message!r})"
