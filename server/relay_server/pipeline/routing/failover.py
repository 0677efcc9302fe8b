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
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import NativeEvent, NativeResponse, ProviderCall, Usage
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.observability.attempts import observe_attempt
from relay_server.pipeline.routing.route import Attempt, AttemptOutcome, AttemptResult, RetryPolicy, RoutePlan, Ticket
from relay_server.providers.translator import ProviderFailure, malformed_failure

log = logging.getLogger(__name__)


class Served(Protocol):
    """Where the loop notes what serves the request: the credential (the request log's
    ``credential_id``) and the catalog model, which differs from the requested one when a
    fallback model serves it — the meter prices the model that actually answered.

    ``after_answer`` collects the bookkeeping of the attempt that answered (its ticket's
    close: outbound window settlement, breaker, route latency), which the pipeline's
    metering task runs once the answer has gone: nothing the client waits for.
    """

    credential_id: str | None
    entry: CatalogEntry
    after_answer: list[Callable[[], Awaitable[None]]]


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


def _response_usage(response: dict[str, Any] | NativeResponse) -> Any:
    """The OpenAI-shaped usage of an answer (the outbound token count and the anomaly sample)."""
    if isinstance(response, NativeResponse):
        return response.usage.as_openai() if response.usage is not None else None
    return response.get("usage")


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
                    call = call.with_credential(ticket.credential)
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
            self._note_route(attempt)
            if self.served is not None:
                self.served.credential_id = attempt.credential_id
                if attempt.entry is not None:
                    self.served.entry = attempt.entry
            return attempt, call, ticket
        return None

    def _note_route(self, attempt: Attempt) -> None:
        """What ``x-relay-route`` / ``x-relay-route-reason`` and the request log say if this attempt answers."""
        route = self.ctx.route
        model = attempt.entry.relay_name if attempt.entry is not None else self.ctx.model_name
        route.target = f"{model}@{attempt.provider_id}"
        reason = attempt.route_reason or "model"
        reason = reason if self.made == 1 else f"retry {self.made}: {reason}"
        route.reason = f"{route.rule}; {reason}" if route.rule else reason

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


async def _close_answered(served: Served | None, ticket: Ticket | None, result: AttemptResult) -> None:
    """The answering attempt's ticket: closed after the answer has gone when the request has a
    metering task to do it (its Redis round trip is then off the client's path), else now."""
    if served is not None and ticket is not None:
        ended = AttemptResult(result.outcome, result.latency_ms, result.tokens, result.retry_after_s, time.monotonic())
        served.after_answer.append(functools.partial(ticket.close, ended))
    else:
        await _close(ticket, result)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def complete_with_failover(
    ctx: RequestContext, attempts: Sequence[Attempt], *, served: Served | None = None
) -> dict[str, Any] | NativeResponse:
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
        usage = _response_usage(response)
        observed.usage(usage)
        if isinstance(response, dict):
            observed.chunk(response)  # gen_ai.response.* (id, model, finish reasons) on the attempt's span
        observed.finish("success")
        await _close_answered(served, ticket, AttemptResult("success", _elapsed_ms(started), _usage_tokens(usage)))
        return response
    raise walk.final_error()


class FailoverStream:
    """The chunks of the first attempt that produced one: attempts run until a first chunk
    arrives (commit), then that attempt's chunks pass through one ``__anext__`` each.

    A plain iterator object, not a generator: the stream session drives it directly, so a
    chunk crosses one method call here, not a stack of generator frames.  ``aclose`` (or
    leaving the ``async with`` block) closes the provider stream and the attempt's ticket.
    """

    def __init__(self, ctx: RequestContext, attempts: Sequence[Attempt], served: Served | None) -> None:
        self._ctx = ctx
        self._walk = _Walk(ctx, attempts, served)
        self._upstream: AsyncIterator[Any] | None = None
        self._attempt: Attempt | None = None
        self._ticket: Ticket | None = None
        self._observed: Any = None
        self._latency = 0
        self._tokens: int | None = None
        self._first: Any = None
        self._closed = False

    def __aiter__(self) -> FailoverStream:
        return self

    @property
    def buffered(self) -> int:
        """Items the committed attempt holds ready without waiting (see ``HttpStream.buffered``)."""
        return getattr(self._upstream, "buffered", 0) if self._first is None else 1

    async def __aenter__(self) -> FailoverStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        if self._upstream is None:
            await self._commit()
            first, self._first = self._first, None
            return self._note(first)
        try:
            chunk = await anext(self._upstream)
        except StopAsyncIteration:
            await self._end(AttemptResult("success", self._latency, self._tokens))
            raise
        except RelayError as exc:
            # Mid-stream: too late to switch; the door sends it in-band.
            assert self._attempt is not None
            log.info(
                "provider stream failed mid-way",
                extra={"request_id": self._ctx.request_id, "provider_id": self._attempt.provider_id,
                       "credential_id": self._attempt.credential_id, "error_code": exc.code},
            )  # fmt: skip
            await self._end(AttemptResult(outcome_of(exc), self._latency, self._tokens))
            raise
        except BaseException:
            await self._end(AttemptResult("cancelled", self._latency, self._tokens))
            raise
        return self._note(chunk)

    def _note(self, chunk: Any) -> Any:
        """The provider's usage, for the attempt's result (outbound token accounting)."""
        if isinstance(chunk, dict):
            self._observed.chunk(chunk)  # gen_ai.response.* (a no-op without tracing)
            if not chunk.get("choices") and chunk.get("usage") is not None:
                self._tokens = _usage_tokens(chunk["usage"]) or self._tokens
                self._observed.usage(chunk["usage"])
        elif isinstance(chunk, NativeEvent) and chunk.usage is not None:
            self._tokens = chunk.usage.total_tokens or self._tokens
            self._observed.usage(chunk.usage.as_openai())
        return chunk

    async def _commit(self) -> None:
        """Attempts, in the plan's order, until one yields its first chunk."""
        walk = self._walk
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
                self._closed = True
                raise
            # Committed: from here on this attempt is the answer, whatever happens.
            observed.first_chunk()
            self._attempt, self._ticket, self._observed = attempt, ticket, observed
            self._upstream, self._first = upstream, first
            self._latency = _elapsed_ms(started)
            return
        self._closed = True
        raise walk.final_error()

    async def _end(self, result: AttemptResult) -> None:
        if self._closed:
            return
        self._closed = True
        if self._observed is not None:
            self._observed.finish(result.outcome)
        if self._upstream is not None:
            await _aclose_quietly(self._upstream)
        if result.outcome == "success":
            await _close_answered(self._walk.served, self._ticket, result)
        else:
            await _close(self._ticket, result)

    async def aclose(self) -> None:
        """Close upstream; a stream left before its end counts as a cancelled attempt."""
        await self._end(AttemptResult("cancelled", self._latency, self._tokens))


def stream_with_failover(
    ctx: RequestContext, attempts: Sequence[Attempt], *, served: Served | None = None
) -> FailoverStream:
    """Streaming chat and completions: provider chunk dicts, usage chunk last."""
    return FailoverStream(ctx, attempts, served)


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
