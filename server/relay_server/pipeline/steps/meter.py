"""Step 7: what a request cost and what gets recorded about it.

Pricing itself is ``relay_server.domain.pricing.price`` (the one function,
exact decimals only); this step picks the tenant's markup and records.

A finished request becomes a ``Metered`` record: one ``requests`` row (handed
to the batched writer, never written on the hot path) and one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from relay_server.domain.metered import Metered, RequestRecorder
from relay_server.domain.pricing import DEFAULT_MARKUP, Cost
from relay_server.observability.log_lines import info_line
from relay_server.storage.postgres.request_log import RequestRow

log = logging.getLogger("relay.requests")


class MarkupSource(Protocol):
    """The tenant's negotiated markup (tenant_config ``markup_rate``), else the default."""

    async def markup_rate(self, tenant_id: str) -> Decimal: ...


class DefaultMarkup:
    async def markup_rate(self, tenant_id: str) -> Decimal:
        return DEFAULT_MARKUP


_MAX_ERROR_MESSAGE = 1000


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def request_row(m: Metered) -> RequestRow | None:
    """The ``requests`` row for a metered request; None without a tenant (authentication failed)."""
    ctx, principal, usage, cost = m.ctx, m.ctx.principal, m.usage, m.cost
    if principal is None:
        return None
    started = _at(ctx.started_at)
    ttft = ctx.ttft_ms()
    metadata: dict[str, object] = {}
    if m.usage_source:
        metadata["usage_source"] = m.usage_source
    if ctx.stream:
        metadata["include_usage"] = ctx.include_usage
    if ctx.tags:
        metadata["tags"] = ctx.tags
    # Cache hits are recorded by pipeline/steps/cache.py's CachedMetered, which adds these fields.
    cache_kind: str | None = getattr(m, "cache_kind", None)
    cost_saved: Cost | None = getattr(m, "cost_saved", None)
    if cost_saved is not None:
        metadata["cost_saved"] = str(cost_saved.total_cost)
    return RequestRow(
        id=ctx.request_id,
        created_at=started,
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        environment=principal.environment,
        request_type=ctx.kind,
        door=ctx.door,
        stream=ctx.stream,
        started_at=started,
        status=m.outcome.status,
        end_user_id=principal.end_user_id,
        requested_model=str(ctx.body.get("model"))[:200] if ctx.body.get("model") is not None else None,
        model_id=m.entry.model_id if m.entry else None,
        provider_id=ctx.provider_id,
        credential_id=m.credential_id,
        input_tokens=usage.prompt_tokens if usage else None,
        output_tokens=usage.completion_tokens if usage else None,
        total_tokens=usage.total_tokens if usage else None,
        cache_read_tokens=usage.cache_read_tokens if usage else None,
        cache_write_tokens=usage.cache_write_tokens if usage else None,
        input_cost=cost.input_cost if cost else None,
        output_cost=cost.output_cost if cost else None,
        total_cost=cost.provider_cost if cost else None,
        markup_rate=m.markup,
        relay_revenue=cost.relay_revenue if cost else None,
        cost_micros=cost.total_micros if cost else None,
        first_token_at=started + timedelta(milliseconds=ttft) if ttft is not None else None,
        completed_at=_at(m.completed_at),
        latency_ms=max(0, int((m.completed_at - ctx.started_at) * 1000)),
        ttft_ms=ttft,
        error_code=m.outcome.error_code,
        error_message=(m.outcome.error_message or None) and m.outcome.error_message[:_MAX_ERROR_MESSAGE],
        http_status=m.outcome.http_status,
        attempts=ctx.attempts,
        cache_hit=cache_kind is not None,
        cache_kind=cache_kind,
        cache_key=getattr(m, "cache_key", None) or None,
        request_metadata=metadata or None,
        route_alias=ctx.route.alias,
        route_target=ctx.route.target or None,
        route_reason=ctx.route.reason or None,
        guardrails=guardrail_rows(ctx.guardrails),
    )


def guardrail_rows(decisions: Mapping[tuple[str, str, str], int] | None) -> list[dict[str, Any]] | None:
    """The request log's ``guardrails`` column: one entry per (guardrail, stage, action)."""
    if not decisions:
        return None
    return [{"guardrail": g, "stage": s, "action": a, "count": n} for (g, s, a), n in decisions.items()]


class LogRecorder:
    """Writes one structured log line per request (never the key, only its hint)."""

    def record(self, metered: Metered) -> None:
        ctx, entry, outcome, cost, usage = metered.ctx, metered.entry, metered.outcome, metered.cost, metered.usage
        principal = ctx.principal
        info_line(
            log,
            "request",
            {
                "request_id": ctx.request_id,
                "tenant_id": principal.tenant_id if principal else None,
                "key_hint": principal.key_hint if principal else None,
                "environment": principal.environment if principal else None,
                "model": entry.relay_name if entry else ctx.model_name,
                "provider": ctx.provider_id,
                "kind": ctx.kind,
                "stream": ctx.stream,
                "status": outcome.status,
                "http_status": outcome.http_status,
                "error_code": outcome.error_code,
                "input_tokens": usage.prompt_tokens if usage else None,
                "output_tokens": usage.completion_tokens if usage else None,
                "usage_source": metered.usage_source,
                "total_cost": str(cost.total_cost) if cost else None,
                "cost_micros": cost.total_micros if cost else None,
                "latency_ms": ctx.elapsed_ms(),
                "ttft_ms": ctx.ttft_ms(),
            },
        )


class RequestLogRecorder:
    """The request log row (batched, off the hot path) plus the structured log line."""

    def __init__(self, writer: RowSink, line: RequestRecorder | None = None) -> None:
        self._writer = writer
        self._line = line or LogRecorder()

    def record(self, metered: Metered) -> None:
        row = request_row(metered)
        if row is not None:
            self._writer.submit(row)
        self._line.record(metered)


class RowSink(Protocol):
    def submit(self, row: RequestRow) -> None: ...
