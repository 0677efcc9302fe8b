"""The retry and failover loop over a request's ``RoutePlan``.

The spec's policy, exactly:

* at most ``max_attempts`` (3) attempts, ``backoff_s`` (100 ms) exponential
  backoff between them, each on another (provider, key) where one is left —
  untried candidates first, then the ones that failed with a provider fault;
* provider 429 → the next key at once (no backoff) and that key is not used
  again by this request (its gate cools it down for everyone);
* provider 401/403 → that key is skipped, the next one tried;
* any other provider 4xx → returned as-is, never retried;
* 5xx, timeouts, connection resets, malformed or cut streams → retried;
* nothing could be tried → 503 ``no_provider_available``; everything tried
  failed → the last error (504 for a timeout), except that keys rate-limited
  by their provider become a 503 (the tenant exceeded nothing of its own).

Streams fail over only before their first chunk: that chunk is what the API
layer waits for before it sends anything, so until then a switch is invisible.
After it, a failure propagates (the API layer writes it as an in-band error
frame).  The upstream generator is closed on every path — end, error, client
cancellation — which closes the provider connection at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Protocol

from relay_server.errors import ErrorKind, RelayError
from relay_server.observability.attempts import observe_attempt
from relay_server.pipeline.catalog import CatalogEntry
from relay_server.pipeline.context import RequestContext
from relay_server.pipeline.route import Attempt, AttemptOutcome, AttemptResult, RetryPolicy, RoutePlan, Ticket
from relay_server.providers.base import ProviderCall, Usage
from relay_server.providers.translator import ProviderFailure, malformed_failure

log = logging.getLogger(__name__)


class Served(Protocol):
    """Where the loop notes what serves the request: the credential (the request log's
    ``credential_id``) and the catalog model, which differs from the requested one when a
    fallback model serves it — the meter prices the model that actually answered."""

    credential_id: str | None
    entry: CatalogEntry


def outcome_of(err: RelayError) -> AttemptOutcome:
    if isinstance(err, ProviderFailure):
        if err.switch_key:
            return "limited"
        if err.upstream_status in (401, 403):
            return "refused"
    return "failure" if err.retryable else "rejected"


def _usage_tokens(usage: Any) -> int | None:
    parsed = Usage.from_openai(usage) if isinstance(usage, dict) else None
    return parsed.total_tokens if parsed is not None else None


class _Walk:
    """One request's walk over its candidates."""

    def __init__(self, ctx: RequestContext, plan: Sequence[Attempt], served: Served | None) -> None:
        self.ctx = ctx
        self.served = served
        self.candidates = list(plan)
        self.policy = plan.policy if isinstance(plan, RoutePlan) else RetryPolicy()
        self.made = 0
        self.tried: set[tuple[str, str, str | None]] = set()
        self.excluded: set[tuple[str, str | None]] = set()  # by credential: rate-limited, refused, saturated
        self.last_error: RelayError | None = None
        self.skip_backoff = False

    def _order(self) -> list[Attempt]:
        untried = [a for a in self.candidates if a.key not in self.tried]
        # Only gated (live) candidates are retried on the same key: a test-mode
        # attempt is deterministic, and its simulated errors are final by design.
        again = [a for a in self.candidates if a.key in self.tried and a.gate is not None]
        return [a for a in untried + again if a.credential_key not in self.excluded]

    async def next(self) -> tuple[Attempt, ProviderCall, Ticket | None] | None:
        if self.made >= self.policy.max_attempts:
            return None
        for attempt in self._order():
            ticket: Ticket | None = None
            call = attempt.call
            if attempt.gate is not None:
                ticket = await attempt.gate.open()
                if ticket is None:  # circuit open or key saturated right now
                    self.excluded.add(attempt.credential_key)
                    continue
                if ticket.credential is not None:
                    call = dataclasses.replace(call, credential=ticket.credential)
            self.made += 1
            if self.made > 1 and not self.skip_backoff:
                try:
                    await self.policy.sleep(self.policy.backoff(self.made))
                except BaseException:  # cancelled while backing off: give the slot back
                    await _close(ticket, AttemptResult("cancelled"))
                    raise
            self.tried.add(attempt.key)
            self.ctx.provider_id = attempt.provider_id
            self.ctx.attempts += 1
            if self.served is not None:
                self.served.credential_id = attempt.credential_id
                if attempt.entry is not None:
                    self.served.entry = attempt.entry
            return attempt, call, ticket
        return None

    def failed(self, attempt: Attempt, err: RelayError, outcome: AttemptOutcome) -> None:
        """Record a failure; raises it when no retry may follow."""
        log.info(
            "provider attempt failed",
            extra={
                "request_id": self.ctx.request_id,
                "provider_id": attempt.provider_id,
                "credential_id": attempt.credential_id,
                "outcome": outcome,
                "upstream_status": getattr(err, "upstream_status", None),
                "error_code": err.code,
            },
        )
        if outcome == "rejected":
            raise err
        if outcome in ("limited", "refused"):
            self.excluded.add(attempt.credential_key)
        self.skip_backoff = outcome == "limited"
        self.last_error = err

    def final_error(self) -> RelayError:
        last = self.last_error
        model = self.ctx.model_name
        if last is None:
            return RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, f"No provider is available to serve `{model}` right now.")
        if isinstance(last, ProviderFailure) and last.switch_key:
            return RelayError(
                ErrorKind.NO_PROVIDER_AVAILABLE,
                f"Every provider key that serves `{model}` is rate limited by its provider right now.",
                retry_after_s=last.retry_after_s or 1,
            )
        return last


async def _close(ticket: Ticket | None, result: AttemptResult) -> None:
    if ticket is not None:
        await ticket.close(result)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def complete_with_failover(
    ctx: RequestContext, attempts: Sequence[Attempt], *, served: Served | None = None
) -> dict[str, Any]:
    """Non-streaming chat, completions and embeddings."""
    walk = _Walk(ctx, attempts, served)
    while (step := await walk.next()) is not None:
        attempt, call, ticket = step
        started = time.monotonic()
        observed = observe_attempt(attempt)  # span, provider time, anomaly sample (observability/attempts.py)
        try:
            if ctx.kind == "embedding":
                response = await attempt.provider.embed(call)
            else:
                response = await attempt.provider.complete(call)
        except RelayError as err:
            outcome = outcome_of(err)
            observed.finish(outcome, err)
            await _close(ticket, AttemptResult(outcome, _elapsed_ms(started), retry_after_s=err.retry_after_s))
            walk.failed(attempt, err, outcome)
            continue
        except BaseException:
            observed.finish("cancelled")
            await _close(ticket, AttemptResult("cancelled"))
            raise
        observed.response(response)  # usage and gen_ai.response.* on the attempt's span
        observed.finish("success")
        await _close(ticket, AttemptResult("success", _elapsed_ms(started), _usage_tokens(response.get("usage"))))
        return response
    raise walk.final_error()


class FailoverStream:
    """The chunks of the first attempt that produced one; an async iterator and
    an async context manager (leaving the block closes everything upstream)."""

    def __init__(self, ctx: RequestContext, attempts: Sequence[Attempt], served: Served | None) -> None:
        self._gen = _stream(ctx, attempts, served)

    def __aiter__(self) -> FailoverStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> FailoverStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def stream_with_failover(
    ctx: RequestContext, attempts: Sequence[Attempt], *, served: Served | None = None
) -> FailoverStream:
    """Streaming chat and completions: provider chunk dicts, usage chunk last."""
    return FailoverStream(ctx, attempts, served)


async def _stream(
    ctx: RequestContext, attempts: Sequence[Attempt], served: Served | None
) -> AsyncGenerator[dict[str, Any], None]:
    walk = _Walk(ctx, attempts, served)
    while (step := await walk.next()) is not None:
        attempt, call, ticket = step
        started = time.monotonic()
        observed = observe_attempt(attempt)
        upstream = attempt.provider.stream(call)
        try:
            first = await anext(upstream)
        except StopAsyncIteration:
            err: RelayError = malformed_failure("the stream ended before its first chunk")
            observed.finish("failure", err)
            await _close(ticket, AttemptResult("failure", _elapsed_ms(started)))
            walk.failed(attempt, err, "failure")
            continue
        except RelayError as exc:
            await _aclose_quietly(upstream)
            outcome = outcome_of(exc)
            observed.finish(outcome, exc)
            await _close(ticket, AttemptResult(outcome, _elapsed_ms(started), retry_after_s=exc.retry_after_s))
            walk.failed(attempt, exc, outcome)
            continue
        except BaseException:
            observed.finish("cancelled")
            await _aclose_quietly(upstream)
            await _close(ticket, AttemptResult("cancelled"))
            raise
        # Committed: from here on this attempt is the answer, whatever happens.
        observed.first_chunk()
        latency = _elapsed_ms(started)
        tokens: int | None = None
        result = AttemptResult("cancelled", latency)
        try:
            chunk = first
            while True:
                observed.chunk(chunk)  # gen_ai.response.* (a no-op without tracing)
                if not chunk.get("choices") and chunk.get("usage") is not None:
                    tokens = _usage_tokens(chunk["usage"]) or tokens
                    observed.usage(chunk["usage"])
                yield chunk
                chunk = await anext(upstream)
        except StopAsyncIteration:
            result = AttemptResult("success", latency, tokens)
        except RelayError as exc:
            # Mid-stream: too late to switch; the API layer sends it in-band.
            result = AttemptResult(outcome_of(exc), latency, tokens)
            log.info(
                "provider stream failed mid-way",
                extra={"request_id": ctx.request_id, "provider_id": attempt.provider_id,
                       "credential_id": attempt.credential_id, "error_code": exc.code},
            )  # fmt: skip
            raise
        finally:
            observed.finish(result.outcome)
            await _aclose_quietly(upstream)
            await _close(ticket, result)
        return
    raise walk.final_error()


async def _aclose_quietly(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # noqa: BLE001 (closing must not mask the error being handled)
        log.debug("closing an upstream stream failed", exc_info=True)
    except asyncio.CancelledError:
        raise
