"""The contract between ``HttpProvider`` and one provider wire format.

A ``Translator`` is pure: it turns a ``ProviderCall`` (OpenAI shapes) into an
``UpstreamRequest``, and the provider's answers (JSON body, SSE events, error
responses) back into OpenAI shapes or a ``ProviderFailure``.  It never does I/O
and never mutates ``call.body``: the same call is replayed on retry and on
fallback, so a translator that edited it in place would corrupt the next attempt.

``ProviderFailure`` is how a router tells "try elsewhere" from "return as-is"
without matching strings: ``retryable`` (another key/provider may succeed),
``switch_key`` (a provider rate limit: move to the next key at once, no backoff)
and ``upstream_status`` (the provider's HTTP status, if there was one).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay_server.domain.provider import Credential, NativeEvent, NativeResponse, ProviderCall
from relay_server.errors import ErrorKind, RelayError
from relay_server.providers.sse import SSEEvent


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    """Carries the credential: excluded from ``repr`` so it never reaches a log."""
    json_body: Mapping[str, Any] | None = None
    guarded: bool = False
    """A tenant-chosen destination: every connection is checked against ``relay_server.address_policy``."""


class ProviderFailure(RelayError):
    """A provider-side failure, classified for the router.

    ``upstream_message`` keeps the provider's own message for logs when the
    client-facing ``message`` is deliberately generic (it may name our account).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool,
        switch_key: bool = False,
        upstream_status: int | None = None,
        upstream_message: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(kind, message, **kwargs)
        self._retryable = retryable
        self.switch_key = switch_key
        self.upstream_status = upstream_status
        self.upstream_message = upstream_message

    @property
    def retryable(self) -> bool:
        return self._retryable

    def __repr__(self) -> str:
        return (
            f"ProviderFailure({self.kind.name}, {self.message!r}, upstream_status={self.upstream_status}, "
            f"retryable={self._retryable}, switch_key={self.switch_key})"
        )


class StreamTranslator(Protocol):
    """Per-stream state machine: SSE events in, OpenAI chunk dicts out (or, for a translator that
    passes the door's own dialect through, ``NativeEvent``s)."""

    @property
    def done(self) -> bool:
        """True once the provider signalled the end of the stream."""
        ...

    def feed(self, event: SSEEvent) -> list[dict[str, Any]] | list[NativeEvent]:
        """Chunks produced by one event (often one, sometimes none or two)."""
        ...

    def finish(self) -> list[dict[str, Any]] | list[NativeEvent]:
        """Called when the connection ends.  Returns trailing chunks, or raises
        ``ProviderFailure`` if the stream was cut short (never a silent truncation)."""
        ...


class Translator(Protocol):
    """One (door × provider API) pair.  The OpenAI-shaped pairs translate every door's common form;
    a pair whose two sides speak one dialect passes bodies and events through untouched."""

    name: str

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest: ...

    def response(self, status: int, body: Any, call: ProviderCall) -> dict[str, Any] | NativeResponse: ...

    def stream_events(self, call: ProviderCall) -> StreamTranslator: ...

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderFailure: ...

    def models_request(self, credential: Credential | None) -> UpstreamRequest: ...

    def models_response(self, body: Any) -> dict[str, Any]:
        """The provider's model list as an OpenAI ``{"object": "list", "data": [...]}``."""
        ...


# ---------------------------------------------------------------------------
# Shared failure helpers (transport, HTTP status, malformed payloads).


def timeout_failure(what: str = "the upstream provider did not respond in time") -> ProviderFailure:
    return ProviderFailure(ErrorKind.REQUEST_TIMEOUT, what, retryable=True)


def connection_failure(detail: str, what: str = "could not reach the upstream provider") -> ProviderFailure:
    # The detail (e.g. "connection refused") stays in upstream_message for logs.
    return ProviderFailure(
        ErrorKind.PROVIDER_ERROR,
        what,
        retryable=True,
        upstream_message=detail,
    )


def malformed_failure(detail: str) -> ProviderFailure:
    return ProviderFailure(
        ErrorKind.PROVIDER_ERROR,
        "the upstream provider sent a malformed response",
        retryable=True,
        upstream_message=detail,
    )


def truncated_failure() -> ProviderFailure:
    return ProviderFailure(
        ErrorKind.PROVIDER_ERROR,
        "the upstream provider ended the stream before completing it",
        retryable=True,
    )


def unsupported(message: str, param: str | None = None) -> ProviderFailure:
    """A request this provider API cannot express; same answer every attempt."""
    return ProviderFailure(ErrorKind.INVALID_REQUEST, message, retryable=False, param=param)


def parse_retry_after(headers: Mapping[str, str]) -> int | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (delta seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0, math.ceil(float(raw_ms) / 1000))
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if not raw:
        return None
    try:
        return max(0, math.ceil(float(raw)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - time.time()))


def classify_http_error(
    status: int,
    *,
    message: str,
    code: str | None,
    param: str | None,
    headers: Mapping[str, str],
) -> ProviderFailure:
    """One table for every provider: HTTP status -> ProviderFailure."""
    if status == 429:
        # Generic message on purpose: provider rate-limit texts name our organisation.
        return ProviderFailure(
            ErrorKind.RATE_LIMIT_EXCEEDED,
            "the upstream provider's rate limit was reached",
            retryable=True,
            switch_key=True,
            upstream_status=status,
            upstream_message=message,
            retry_after_s=parse_retry_after(headers),
        )
    if status in (401, 403):
        # The provider rejected OUR credential (revoked key, wrong region, no access).
        # That is Relay's fault, not the tenant's: surfacing it as invalid_api_key
        # would tell the tenant their Relay key is bad.  Another key may work.
        # The provider's message is kept out of the client message: it can quote
        # a fragment of our key.
        return ProviderFailure(
            ErrorKind.PROVIDER_ERROR,
            f"the upstream provider rejected Relay's credential (HTTP {status})",
            retryable=True,
            upstream_status=status,
            upstream_message=message,
        )
    if status == 408:
        return ProviderFailure(
            ErrorKind.REQUEST_TIMEOUT,
            "the upstream provider timed out",
            retryable=True,
            upstream_status=status,
            upstream_message=message,
        )
    if 400 <= status < 500:
        # The request itself is wrong: the provider's status, message and code are
        # the most useful answer, and no other provider will do better.
        kind = _CLIENT_ERROR_KINDS.get(status, ErrorKind.BAD_REQUEST)
        return ProviderFailure(
            kind,
            message or f"the upstream provider rejected the request (HTTP {status})",
            retryable=False,
            upstream_status=status,
            upstream_message=message,
            code=code,
            param=param,
            http_status=status,
        )
    return ProviderFailure(
        ErrorKind.PROVIDER_ERROR,
        f"the upstream provider failed (HTTP {status})",
        retryable=True,
        upstream_status=status,
        upstream_message=message,
    )


_CLIENT_ERROR_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind.BAD_REQUEST,
    404: ErrorKind.NOT_FOUND,
    409: ErrorKind.CONFLICT,
    413: ErrorKind.REQUEST_TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
}


def base_url_for(call: ProviderCall, default: str) -> str:
    """The credential's base URL wins (BYOK endpoints, self-hosted servers)."""
    url = (call.credential.base_url if call.credential else "") or default
    return url.rstrip("/")
