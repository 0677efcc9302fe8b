"""Test-mode error simulation: lets tenants exercise their error handling.

With a ``rly_test_sk_`` key, the header ``x-relay-test-error: <code>`` makes the
request fail with that error of the error table (``rate_limit_exceeded``,
``provider_error``, ``request_timeout``, …), exactly as a live failure would
look; ``x-relay-test-error-after: N`` lets a stream send N chunks first, so
mid-stream failures can be tested too.  Live keys ignore these headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from relay_server.errors import ErrorKind, RelayError
from relay_server.providers.base import Provider, ProviderCall

ERROR_HEADER = "x-relay-test-error"
AFTER_HEADER = "x-relay-test-error-after"

_BY_CODE = {kind.value.code: kind for kind in ErrorKind}

_MESSAGES = {
    ErrorKind.RATE_LIMIT_EXCEEDED: "Simulated: rate limit reached for requests.",
    ErrorKind.PROVIDER_ERROR: "Simulated: the provider returned an error after retries.",
    ErrorKind.NO_PROVIDER_AVAILABLE: "Simulated: no provider is available for this model.",
    ErrorKind.REQUEST_TIMEOUT: "Simulated: the provider did not respond in time.",
}


def simulated_error(metadata: Mapping[str, str]) -> tuple[RelayError, int] | None:
    """The error and the number of chunks to send first, when the headers ask for one."""
    code = metadata.get(ERROR_HEADER)
    if not code:
        return None
    kind = _BY_CODE.get(code.strip().lower())
    if kind is None:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            f"Unknown {ERROR_HEADER} value {code!r}; use one of: {', '.join(sorted(_BY_CODE))}.",
            code="invalid_header",
        )
    after_raw = metadata.get(AFTER_HEADER, "0")
    if not after_raw.isdigit():
        raise RelayError(ErrorKind.BAD_REQUEST, f"{AFTER_HEADER} must be a whole number.", code="invalid_header")
    retry_after = 1 if kind is ErrorKind.RATE_LIMIT_EXCEEDED else None
    err = RelayError(kind, _MESSAGES.get(kind, f"Simulated {kind.value.code} error."), retry_after_s=retry_after)
    return err, int(after_raw)


class FailingProvider:
    """Wraps the test-mode provider and fails as the headers asked."""

    name = "test"

    def __init__(self, inner: Provider, error: RelayError, after_chunks: int) -> None:
        self._inner = inner
        self._error = error
        self._after = after_chunks

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        raise self._error

    async def embed(self, call: ProviderCall) -> dict[str, Any]:
        raise self._error

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        async for chunk in self._inner.stream(call):
            if sent >= self._after:
                break
            yield chunk
            sent += 1
        raise self._error
