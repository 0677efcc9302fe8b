"""What one provider attempt tells observability: a GenAI client span, the
provider's share of the request's time (for ``x-relay-overhead-ms``), the
attempt metrics and a sample for the provider anomaly detector.

The failover loop calls ``observe_attempt`` when it sends an attempt, then
``first_chunk`` (streams), ``chunk`` (each streamed chunk, or a whole
answer: id, model and finish reasons become ``gen_ai.response.*``), ``usage``
and ``finish``.  Outside a bound request
(unit tests, background work) it returns a shared no-op observer.
"""

from __future__ import annotations

import time
from typing import Any

from relay_server.observability.request_context import RequestScope, current
from relay_server.observability.tracing import OPERATIONS, request_attributes, response_attributes, usage_attributes


class _NoopAttempt:
    __slots__ = ()

    def first_chunk(self) -> None:
        pass

    def usage(self, usage: Any) -> None:
        pass

    def chunk(self, chunk: Any) -> None:
        pass

    def finish(self, outcome: str, error: BaseException | None = None) -> None:
        pass


NOOP_ATTEMPT = _NoopAttempt()


class AttemptObserver:
    __slots__ = ("_scope", "_provider", "_started", "_first_ns", "_span", "_done", "_seen_head", "_finish_reasons")

    def __init__(self, scope: RequestScope, attempt: Any) -> None:
        self._scope = scope
        self._provider: str = attempt.provider_id
        self._started = time.monotonic_ns()
        self._first_ns: int | None = None
        self._done = False
        self._span = _start_span(scope, attempt) if scope.tracer is not None else None
        self._seen_head = False
        self._finish_reasons: dict[int, str] = {}

    def first_chunk(self) -> None:
        """A stream's first chunk arrived: the provider's time-to-first-byte ends here."""
        if self._first_ns is None:
            self._first_ns = time.monotonic_ns()
            # Counted now: the response headers (and their overhead figure) go out with this chunk.
            self._scope.provider_ns += self._first_ns - self._started

    def usage(self, usage: Any) -> None:
        if self._span is not None:
            self._span.set_attributes(usage_attributes(usage))

    def chunk(self, chunk: Any) -> None:
        """One streamed chunk (or a whole answer): gen_ai.response.* as they appear."""
        if self._span is None:
            return
        if not self._seen_head:
            self._seen_head = True
            self._span.set_attributes(response_attributes(chunk))
        for choice in chunk.get("choices") or ():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if isinstance(reason, str):
                self._finish_reasons[int(choice.get("index") or 0)] = reason
                self._span.set_attribute(
                    "gen_ai.response.finish_reasons", [self._finish_reasons[i] for i in sorted(self._finish_reasons)]
                )

    def finish(self, outcome: str, error: BaseException | None = None) -> None:
        """How the attempt ended (the failover loop's AttemptOutcome).  Runs once."""
        if self._done:
            return
        self._done = True
        # Provider time: the whole call, or for a stream that produced a chunk, up to it (counted then).
        if self._first_ns is None:
            waited = time.monotonic_ns() - self._started
            self._scope.provider_ns += waited
        else:
            waited = self._first_ns - self._started
        hub = self._scope.hub
        latency_s = waited / 1e9
        if hub is not None:
            hub.metrics.observe_attempt(self._provider, outcome, latency_s)
            if outcome != "cancelled":  # a client leaving says nothing about the provider
                hub.detector.observe(self._provider, latency_s * 1000, ok=outcome != "failure")
        if self._span is not None:
            _end_span(self._span, outcome, error)


def observe_attempt(attempt: Any) -> AttemptObserver | _NoopAttempt:
    scope = current()
    if scope is None or attempt.provider_id is None:  # a cache replay is Relay's own time, not a provider's
        return NOOP_ATTEMPT
    return AttemptObserver(scope, attempt)


def _start_span(scope: RequestScope, attempt: Any) -> Any:
    from opentelemetry.trace import SpanKind  # noqa: PLC0415 (tracing is on: the SDK is loaded already)

    call = attempt.call
    operation = OPERATIONS.get(call.kind, call.kind)
    system = getattr(attempt.provider, "name", None) or attempt.provider_id
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": call.provider_model,
        "relay.provider_id": attempt.provider_id,
        "relay.attempt": scope.ctx.attempts if scope.ctx is not None else 0,
    }
    if attempt.credential_id:
        attributes["relay.credential_id"] = attempt.credential_id
    attributes.update(request_attributes(call.body))
    return scope.tracer.start_span(f"{operation} {call.provider_model}", kind=SpanKind.CLIENT, attributes=attributes)


def _end_span(span: Any, outcome: str, error: BaseException | None) -> None:
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

    span.set_attribute("relay.attempt_outcome", outcome)
    if error is not None:
        span.set_attribute("error.type", getattr(error, "code", None) or type(error).__name__)
        upstream = getattr(error, "upstream_status", None)
        if upstream is not None:
            span.set_attribute("http.response.status_code", upstream)
    if outcome in ("failure", "rejected", "limited", "refused"):
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
