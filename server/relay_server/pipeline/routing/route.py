"""Step 5: which backend serves the request.

Test-mode keys never reach a provider: the spec's "router skips provider
selection entirely and calls a local mock handler".  Live keys get a
``RoutePlan`` from the live router (``pipeline/routing/candidates.py``): the ordered
(provider, credential) candidates for the model and its fallback models,
which ``pipeline/routing/failover.py`` walks under the retry policy.

An ``Attempt`` of a live plan carries a ``gate``: it decides at the moment of
sending whether the candidate is still usable (circuit, outbound window),
hands out the decrypted credential for that one call, and takes the result
back (breaker, window reconciliation).  Test-mode attempts have no gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import Credential, Provider, ProviderCall
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.providers.testmode_faults import SimulatingProvider, requested_simulation

# How an attempt ended, for the gate:
#   success   the provider answered (2xx)
#   failure   a provider fault: 5xx, timeout, connection error, broken stream (counts for the breaker)
#   rejected  the provider refused the request itself (4xx): healthy provider, bad request
#   limited   the provider rate-limited this key (429): cool the key down
#   refused   the provider refused this key (401/403): the key is bad, not the provider
#   cancelled the client went away
AttemptOutcome = Literal["success", "failure", "rejected", "limited", "refused", "cancelled"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: AttemptOutcome
    latency_ms: int | None = None
    tokens: int | None = None
    """Tokens the provider reported (input + output), when known."""
    retry_after_s: int | None = None
    ended_at: float | None = None
    """``time.monotonic()`` when the call ended, if the result is reported later than that."""


class Ticket(Protocol):
    """One admitted call through a gate: its credential, and where its result goes."""

    @property
    def credential(self) -> Credential | None: ...

    async def close(self, result: AttemptResult) -> None:
        """Report how the call ended.  Never raises."""
        ...


class AttemptGate(Protocol):
    async def open(self) -> Ticket | None:
        """Admit one call now, or None: skip this candidate (circuit open, key saturated)."""
        ...


@dataclass(frozen=True, slots=True)
class Attempt:
    provider_id: str
    provider: Provider
    call: ProviderCall
    """Without its credential: the gate hands that out per call."""
    entry: CatalogEntry | None = None
    """The catalog model this attempt serves (a fallback model's own entry)."""
    credential_id: str | None = None
    byok: bool = False
    gate: AttemptGate | None = field(default=None, compare=False)
    route_reason: str = field(default="", compare=False)
    """Why this candidate is where it is in the plan (``x-relay-route-reason`` when it answers)."""

    @property
    def key(self) -> tuple[str, str, str | None]:
        """(model, provider, credential): one candidate."""
        return (self.entry.model_id if self.entry else "", self.provider_id, self.credential_id)

    @property
    def credential_key(self) -> tuple[str, str | None]:
        """(provider, credential): what a provider 429 or 401 rules out, for every model."""
        return (self.provider_id, self.credential_id)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The spec's policy: at most 3 attempts, 100 ms exponential backoff."""

    max_attempts: int = 3
    backoff_s: float = 0.1
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False, repr=False)

    def backoff(self, attempt_number: int) -> float:
        """Seconds to wait before attempt ``attempt_number`` (1-based; none before the first)."""
        return 0.0 if attempt_number <= 1 else self.backoff_s * 2 ** (attempt_number - 2)


class RoutePlan(Sequence[Attempt]):
    """The ordered candidates of one request, and the policy to walk them."""

    def __init__(self, attempts: Sequence[Attempt], policy: RetryPolicy | None = None) -> None:
        self._attempts = tuple(attempts)
        self.policy = policy or RetryPolicy()

    @overload
    def __getitem__(self, index: int) -> Attempt: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Attempt]: ...

    def __getitem__(self, index: Any) -> Any:
        return self._attempts[index]

    def __len__(self) -> int:
        return len(self._attempts)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self._attempts)

    def __repr__(self) -> str:
        return f"RoutePlan({[a.key for a in self._attempts]!r})"


class LiveRouter(Protocol):
    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]: ...


class Router:
    def __init__(self, test_provider: Provider, live: LiveRouter | None = None, *, timeout_s: float = 600.0) -> None:
        self._test = test_provider
        self._live = live
        self._timeout_s = timeout_s

    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]:
        assert ctx.principal is not None
        if ctx.principal.is_test:
            call = ProviderCall(
                kind=ctx.kind,
                body=ctx.body,
                provider_model=entry.relay_name,
                request_id=ctx.request_id,
                timeout_s=self._timeout_s,
                door=ctx.door,
                native_body=ctx.native_body,
            )
            simulation = requested_simulation(ctx.metadata)
            provider = self._test if simulation is None else SimulatingProvider(self._test, simulation)
            return [Attempt("test", provider, call, entry)]
        if self._live is None:
            raise RelayError(
                ErrorKind.NO_PROVIDER_AVAILABLE,
                f"No provider is configured to serve `{entry.relay_name}` for live keys.",
            )
        return await self._live.plan(ctx, entry)
