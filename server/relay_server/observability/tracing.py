"""OpenTelemetry traces: a root span per request, a span per pipeline step and
one per provider attempt, with the GenAI semantic conventions.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT``).
When off, no OpenTelemetry module is even imported and ``step`` is one
context-variable read returning a shared no-op context manager: the hot path
makes no tracer calls.  The SDK is imported lazily, only by ``build_tracing``.

The tracer provider is Relay's own (never installed as the global one), so
the process's other libraries do not start exporting by surprise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from relay_server.observability.request_context import RequestScope, current
from relay_server.settings import Settings

_NOOP: AbstractContextManager[None] = contextlib.nullcontext()

# GenAI operation names (gen_ai.operation.name) per request kind.
OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}

# Request parameters copied to attempt spans (gen_ai.request.*), when present and scalar.
_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def step(name: str) -> AbstractContextManager[Any]:
    """A child span around one pipeline step; a no-op without tracing or outside a request."""
    scope = current()
    if scope is None or scope.tracer is None:
        return _NOOP
    return scope.tracer.start_as_current_span(name)


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, attribute in _REQUEST_PARAMS.items():
        value = body.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[attribute] = value
    return out


def usage_attributes(usage: Any) -> dict[str, int]:
    """gen_ai.usage.* from an OpenAI-shaped ``usage`` object."""
    if not isinstance(usage, Mapping):
        return {}
    out = {}
    for source, attribute in (("prompt_tokens", "gen_ai.usage.input_tokens"), ("completion_tokens", "gen_ai.usage.output_tokens")):
        value = usage.get(source)
        if isinstance(value, int) and not isinstance(value, bool):
            out[attribute] = value
    return out


def response_attributes(body: Mapping[str, Any]) -> dict[str, str]:
    """gen_ai.response.id / .model from an OpenAI-shaped answer or its first chunk."""
    out = {}
    for source, attribute in (("id", "gen_ai.response.id"), ("model", "gen_ai.response.model")):
        value = body.get(source)
        if isinstance(value, str) and value:
            out[attribute] = value
    return out


class Tracing:
    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

        self.provider = provider
        self.tracer = provider.get_tracer("relay_server")
        self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def request_span(self, scope: RequestScope, metadata: Mapping[str, str] | None) -> Iterator[Any]:
        """The request's root span, current for the block; continues the caller's ``traceparent``."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        parent = self._propagator.extract(metadata) if metadata and "traceparent" in metadata else None
        attributes = {"relay.request_id": scope.request_id, "gen_ai.operation.name": OPERATIONS.get(scope.kind, scope.kind)}
        with self.tracer.start_as_current_span(
            f"relay.{scope.kind}", context=parent, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
        ) as span:
            scope.root_span = span
            yield span

    @contextlib.contextmanager
    def rpc_span(self, method: str, metadata: Mapping[str, str] | None) -> Iterator[Any]:
        """A server span for one control-plane RPC (``/pkg.Service/Method``); continues ``traceparent``."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        service, _, name = method.lstrip("/").rpartition("/")
        parent = self._propagator.extract(metadata) if metadata and "traceparent" in metadata else None
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        with self.tracer.start_as_current_span(
            f"{service}/{name}", context=parent, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
        ) as span:
            yield span

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes the batch processor


def _headers(raw: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs if k.strip()}


def traces_endpoint(base: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL: the trace signal lives at /v1/traces under it."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def build_tracing(settings: Settings, exporter: Any = None) -> Tracing | None:
    """Tracing per settings, or None (off).  ``exporter`` (tests) replaces OTLP and exports synchronously."""
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return None
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.name": settings.otel_service_name, "service.instance.id": str(os.getpid())})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        otlp = OTLPSpanExporter(
            endpoint=traces_endpoint(settings.otel_exporter_otlp_endpoint),
            headers=_headers(settings.otel_exporter_otlp_headers),
        )
        provider.add_span_processor(BatchSpanProcessor(otlp))  # exports off the event loop, in its own thread
    return Tracing(provider)
