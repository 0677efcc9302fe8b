"""OpenTelemetry traces: root, step and provider-attempt spans with GenAI attributes, in memory;
and nothing at all when tracing is off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from relay_server.app.observability import build_observability
from relay_server.domain.provider import ProviderCall
from relay_server.domain.request import RequestContext
from relay_server.observability.attempts import NOOP_ATTEMPT, AttemptObserver, observe_attempt
from relay_server.observability.request_context import attach, bind_request
from relay_server.observability.tracing import build_tracing, step, traces_endpoint
from relay_server.pipeline.routing.failover import complete_with_failover, stream_with_failover
from relay_server.pipeline.routing.route import Attempt, RetryPolicy, RoutePlan
from relay_server.providers.translator import classify_http_error
from relay_server.settings import Settings

pytestmark = pytest.mark.asyncio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "authorization": "Bearer rly_test_sk_x"}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
OK = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "usage": USAGE}
CHUNKS = [
    {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
    {"id": "c", "choices": [], "usage": USAGE},
]


class Scripted:
    def __init__(self, name: str, *script: Any) -> None:
        self.name = name
        self.script = list(script)

    def _next(self) -> Any:
        return self.script.pop(0) if self.script else None

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        item = self._next()
        if isinstance(item, BaseException):
            raise item
        return OK

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        item = self._next()
        if isinstance(item, BaseException):
            raise item
        for chunk in CHUNKS:
            yield chunk


async def _no_sleep(_: float) -> None:
    return None


def plan(*providers: Scripted) -> RoutePlan:
    body = {"model": "gpt-4o-mini", "temperature": 0.5, "max_tokens": 64}
    attempts = [Attempt(p.name, p, ProviderCall("chat", body, "gpt-4o-mini", "req_t"), None, f"cred_{p.name}") for p in providers]
    return RoutePlan(attempts, RetryPolicy(sleep=_no_sleep))


def request_ctx() -> RequestContext:
    return RequestContext(request_id="req_t", kind="chat", body={"model": "gpt-4o-mini"}, model="gpt-4o-mini")  # type: ignore[arg-type]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def test_a_request_is_a_tree_of_spans_with_genai_attributes(exporter: InMemorySpanExporter) -> None:
    hub = build_observability(Settings(metrics_port=0), span_exporter=exporter)
    ctx = request_ctx()
    failing = Scripted("groq", classify_http_error(503, message="upstream 503", code=None, param=None, headers={}))
    with bind_request("req_t", "chat", hub, PARENT) as scope:
        attach(ctx)
        with step("relay.route"):
            pass
        response = await complete_with_failover(ctx, plan(failing, Scripted("openai")))
    assert response == OK
    assert scope.provider_ns > 0
    spans = {s.name: s for s in exporter.get_finished_spans()}
    attempts = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    root, route = spans["relay.chat"], spans["relay.route"]
    assert format(root.context.trace_id, "032x") == TRACE_ID  # continues the caller's trace
    assert root.kind is SpanKind.SERVER and root.attributes["relay.request_id"] == "req_t"
    assert route.parent.span_id == root.context.span_id
    assert [a.parent.span_id for a in attempts] == [root.context.span_id] * 2
    first, second = attempts
    assert first.kind is SpanKind.CLIENT
    assert first.status.status_code is StatusCode.ERROR and first.attributes["error.type"] == "provider_error"
    assert first.attributes["http.response.status_code"] == 503 and first.attributes["gen_ai.system"] == "groq"
    assert second.status.status_code is StatusCode.UNSET
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 2, "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 64, "relay.attempt_outcome": "success", "relay.credential_id": "cred_openai",
    }  # fmt: skip
    assert {name: second.attributes.get(name) for name in expected} == expected
    # The attempts also fed the metrics and the anomaly detector.
    registry = hub.registry
    assert registry.get_sample_value("relay_provider_attempts_total", {"provider": "groq", "outcome": "failure"}) == 1
    assert registry.get_sample_value("relay_provider_attempts_total", {"provider": "openai", "outcome": "success"}) == 1
    assert set(hub.detector._buckets) == {"groq", "openai"}  # noqa: SLF001


async def test_a_streamed_attempt_span_lasts_the_stream_and_counts_provider_time_to_first_chunk(
    exporter: InMemorySpanExporter,
) -> None:
    hub = build_observability(Settings(metrics_port=0), span_exporter=exporter)
    ctx = request_ctx()
    with bind_request("req_s", "chat", hub) as scope:
        attach(ctx)
        chunks = [c async for c in stream_with_failover(ctx, plan(Scripted("anthropic")))]
        waited_at_first_chunk = scope.provider_ns
    assert chunks == CHUNKS
    assert waited_at_first_chunk > 0
    [attempt] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 2
    assert attempt.attributes["relay.attempt_outcome"] == "success"


async def test_tracing_off_makes_no_spans_and_steps_are_one_shared_no_op() -> None:
    hub = build_observability(Settings(metrics_port=0))
    assert hub.tracing is None
    assert step("relay.route") is step("relay.admission")  # outside a request
    with bind_request("req_off", "chat", hub) as scope:
        assert scope.tracer is None and scope.root_span is None
        assert step("relay.route") is step("relay.admission")
        observer = observe_attempt(plan(Scripted("openai"))[0])
        assert isinstance(observer, AttemptObserver) and observer._span is None  # noqa: SLF001 (timing only)
    assert observe_attempt(plan(Scripted("openai"))[0]) is NOOP_ATTEMPT  # no request bound


async def test_a_cache_replay_is_not_a_provider_attempt(exporter: InMemorySpanExporter) -> None:
    hub = build_observability(Settings(metrics_port=0), span_exporter=exporter)
    replay = Attempt(None, Scripted("cache"), ProviderCall("chat", {}, "gpt-4o-mini", "req_c"))  # type: ignore[arg-type]
    with bind_request("req_c", "chat", hub):
        assert observe_attempt(replay) is NOOP_ATTEMPT


async def test_otlp_is_configured_from_the_standard_variable() -> None:
    assert build_tracing(Settings()) is None
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/", "OTEL_SERVICE_NAME": "relay-eu"})
    assert settings.otel_exporter_otlp_endpoint == "http://127.0.0.1:4318/"
    tracing = build_tracing(settings)
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "relay-eu"
    tracing.shutdown()  # nothing was recorded: nothing is sent


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://collector/v1/traces", "https://collector/v1/traces"),
    ],
)
async def test_traces_endpoint(base: str, expected: str) -> None:
    assert traces_endpoint(base) == expected
