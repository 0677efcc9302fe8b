"""The request recorder the pipeline is given: the request log first, then the
metrics and the root span's final attributes.  Observability failures are
logged and swallowed: they never cost a request its log row."""

from __future__ import annotations

import logging
from typing import Any

from relay_server.domain.metered import Metered, RequestRecorder
from relay_server.observability.metrics import RelayMetrics
from relay_server.observability.request_context import current

log = logging.getLogger(__name__)


class ObservingRecorder:
    def __init__(self, inner: RequestRecorder, metrics: RelayMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def record(self, metered: Metered) -> None:
        self._inner.record(metered)
        try:
            self._metrics.observe_request(metered)
            scope = current()
            # Metering may finish after the response (settle_after_response): an ended span takes nothing.
            if scope is not None and scope.root_span is not None and scope.root_span.is_recording():
                annotate_root(scope.root_span, metered)
        except Exception:  # noqa: BLE001
            log.warning("request metrics failed", exc_info=True)


def annotate_root(span: Any, m: Metered) -> None:
    """The request's outcome on its root span: who, which model, tokens, cost, status."""
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 (tracing is on)

    ctx, outcome, usage = m.ctx, m.outcome, m.usage
    attributes: dict[str, Any] = {
        "relay.status": outcome.status,
        "http.response.status_code": outcome.http_status,
        "relay.stream": ctx.stream,
        "relay.attempts": ctx.attempts,
    }
    if ctx.principal is not None:
        attributes["relay.tenant_id"] = ctx.principal.tenant_id
        attributes["relay.key_hint"] = ctx.principal.key_hint
    if m.entry is not None:
        attributes["gen_ai.request.model"] = m.entry.relay_name
    if ctx.provider_id:
        attributes["relay.provider_id"] = ctx.provider_id
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if m.cost is not None:
        attributes["relay.cost_micros"] = m.cost.total_micros
    ttft = ctx.ttft_ms()
    if ttft is not None:
        attributes["relay.ttft_ms"] = ttft
    if outcome.error_code:
        attributes["error.type"] = outcome.error_code
    span.set_attributes(attributes)
    if outcome.status in ("error", "timeout"):
        span.set_status(Status(StatusCode.ERROR, outcome.error_code or outcome.status))
