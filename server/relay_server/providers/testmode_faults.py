"""Test-mode simulations: let tenants exercise their error and latency handling.

With a ``rly_test_sk_`` key:
- ``x-relay-test-error: <code>`` makes the request fail with that error of the
  error table (``rate_limit_exceeded``, ``provider_error``, ``request_timeout``,
  …), exactly as a live failure would look;
- ``x-relay-test-error-after: N`` lets a stream send N chunks first, so
  mid-stream failures can be tested too;
- ``x-relay-test-latency-ms: M`` waits M ms before the answer and between
  stream chunks (capped at 10 s), for timeout and cancellation handling.
Live keys ignore these headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from relay_server.domain.provider import NativeEvent, NativeResponse, Provider, ProviderCall
from relay_server.errors import ErrorKind, RelayError

ERROR_HEADER = "x-relay-test-error"
AFTER_HEADER = "x-relay-test-error-after"
LATENCY_HEADER = "x-relay-test-latency-ms"
MAX_LATENCY_MS = 10_000

_BY_CODE = {kind.value.code: kind for kind in ErrorKind}

_MESSAGES = {
    ErrorKind.RATE_LIMIT_EXCEEDED: "Simulated: rate limit reached for requests.",
    ErrorKind.PROVIDER_ERROR: "Simulated: the provider returned an error after retries.",
    ErrorKind.NO_PROVIDER_AVAILABLE: "Simulated: no provider is available for this model.",
    ErrorKind.REQUEST_TIMEOUT: "Simulated: the provider did not respond in time.",
}


@dataclass(frozen=True, slots=True)
class Simulation:
    error: RelayError | None = None
    after_chunks: int = 0
    latency_s: float = 0.0


def _whole_number(metadata: Mapping[str, str], header: str, default: str = "0") -> int:
    raw = metadata.get(header, default).strip()
    if not raw.isdigit():
        raise RelayError(ErrorKind.BAD_REQUEST, f"{header} must be a whole number.", code="invalid_header")
    return int(raw)


def requested_simulation(metadata: Mapping[str, str]) -> Simulation | None:
    """What the test-mode headers ask for, or None when they ask for nothing."""
    code = metadata.get(ERROR_HEADER)
    latency_ms = min(_whole_number(metadata, LATENCY_HEADER), MAX_LATENCY_MS)
    if not code and not latency_ms:
        return None
    error = None
    if code:
        kind = _BY_CODE.get(code.strip().lower())
        if kind is None:
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"Unknown {ERROR_HEADER} value {code!r}; use one of: {', '.join(sorted(_BY_CODE))}.",
                code="invalid_header",
            )
        retry_after = 1 if kind is ErrorKind.RATE_LIMIT_EXCEEDED else None
        error = RelayError(kind, _MESSAGES.get(kind, f"Simulated {kind.value.code} error."), retry_after_s=retry_after)
    return Simulation(error, _whole_number(metadata, AFTER_HEADER), latency_ms / 1000)


class SimulatingProvider:
    """Wraps the test-mode provider and behaves as the headers asked."""

    name = "test"

    def __init__(self, inner: Provider, simulation: Simulation) -> None:
        self._inner = inner
        self._sim = simulation

    async def complete(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        await asyncio.sleep(self._sim.latency_s)
        if self._sim.error is not None:
            raise self._sim.error
        return await self._inner.complete(call)

    async def embed(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        await asyncio.sleep(self._sim.latency_s)
        if self._sim.error is not None:
            raise self._sim.error
        return await self._inner.embed(call)

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any] | NativeEvent]:
        sent = 0
        chunks = self._inner.stream(call)
        try:
            async for chunk in chunks:
                if self._sim.error is not None and sent >= self._sim.after_chunks:
                    raise self._sim.error
                await asyncio.sleep(self._sim.latency_s)
                yield chunk
                sent += 1
        finally:
            # Provider.stream is declared AsyncIterator; every provider's stream is an async generator.
            await chunks.aclose()  # type: ignore[attr-defined]
