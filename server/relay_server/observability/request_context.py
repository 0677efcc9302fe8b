"""The request being served, in a ``contextvars`` variable.

The API layer binds a ``RequestScope`` once per request (``bind_request``);
the pipeline attaches its ``RequestContext`` as soon as it exists
(``attach``).  From then on every log line written while serving the request
(the JSON formatter reads ``log_fields``), every trace span and every
provider attempt knows the request id, tenant, key hint, model and provider
without anyone passing them around.  Tasks the request starts copy the
context, so the meter's shielded task sees the same scope.

Nothing here touches secrets: the scope never holds metadata or keys, only
the pipeline context's public fields (``Principal.key_hint``, never the key).

Kept free of Prometheus and OpenTelemetry imports: the log formatter imports
this module in every process.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay_server.domain.request import RequestContext


@dataclass(slots=True)
class RequestScope:
    request_id: str
    kind: str
    hub: Any = None
    """The process's ``Observability`` (metrics, tracing, anomaly detector), or None."""
    tracer: Any = None
    """An OpenTelemetry tracer when tracing is on; None keeps every span call off the hot path."""
    ctx: RequestContext | None = None
    started_ns: int = 0
    provider_ns: int = 0
    """Time spent waiting on providers (whole attempts; for streams, until their first chunk)."""
    root_span: Any = None

    def overhead_ms(self, now_ns: int | None = None) -> float:
        """Time spent in Relay so far, excluding the providers' time."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        return max(0, now_ns - self.started_ns - self.provider_ns) / 1_000_000


_CURRENT: ContextVar[RequestScope | None] = ContextVar("relay_request_scope", default=None)


def current() -> RequestScope | None:
    return _CURRENT.get()


class _Bound:
    """``bind_request``'s context manager: a plain class, not ``@contextmanager`` (whose generator
    costs about a microsecond more per request; this runs once for every request)."""

    __slots__ = ("_scope", "_token", "_span")

    def __init__(self, request_id: str, kind: str, hub: Any, metadata: Any) -> None:
        tracing = getattr(hub, "tracing", None)
        self._scope = RequestScope(
            request_id, kind, hub, tracing.tracer if tracing is not None else None, started_ns=time.monotonic_ns()
        )
        self._span = tracing.request_span(self._scope, metadata) if tracing is not None else None
        self._token: Token[RequestScope | None] | None = None

    def __enter__(self) -> RequestScope:
        self._token = _CURRENT.set(self._scope)
        if self._span is not None:
            try:
                self._span.__enter__()
            except BaseException:
                self._reset()
                raise
        return self._scope

    def __exit__(self, kind: Any, error: Any, trace: Any) -> bool:
        try:
            return bool(self._span.__exit__(kind, error, trace)) if self._span is not None else False
        finally:
            self._reset()

    def _reset(self) -> None:
        try:
            _CURRENT.reset(self._token)  # type: ignore[arg-type]
        except ValueError:  # a generator finalised from another context: the variable dies with it
            pass


def bind_request(request_id: str, kind: str, hub: Any = None, metadata: Any = None) -> _Bound:
    """Make ``request_id`` the current request for the duration of the ``with`` block.

    With tracing on, the block is also the request's root span (continuing a
    ``traceparent`` the caller sent, if any).
    """
    return _Bound(request_id, kind, hub, metadata)


def attach(ctx: RequestContext) -> None:
    """The pipeline's context for the current request (no-op outside a bound request)."""
    scope = _CURRENT.get()
    if scope is not None:
        scope.ctx = ctx


def overhead_headers() -> tuple[tuple[str, str], ...]:
    """``x-relay-overhead-ms`` for the current request's response headers (observed in the
    overhead histogram too); none outside a bound request.  Call it just before sending them."""
    scope = _CURRENT.get()
    if scope is None:
        return ()
    overhead = scope.overhead_ms()
    metrics = getattr(scope.hub, "metrics", None)
    if metrics is not None:
        metrics.observe_overhead(scope.kind, overhead / 1000)
    return (("x-relay-overhead-ms", f"{overhead:.2f}"),)


def log_fields() -> dict[str, object]:
    """The current request's identifying fields, for the log formatter (empty outside a request)."""
    scope = _CURRENT.get()
    if scope is None:
        return {}
    fields: dict[str, object] = {"request_id": scope.request_id}
    ctx = scope.ctx
    if ctx is None:
        return fields
    principal = ctx.principal
    if principal is not None:
        fields["tenant_id"] = principal.tenant_id
        fields["key_hint"] = principal.key_hint
    if ctx.model:
        fields["model"] = ctx.model
    if ctx.provider_id:
        fields["provider"] = ctx.provider_id
    return fields
