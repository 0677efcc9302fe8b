"""Relay's Prometheus metrics: what a finished request counts, the sampler, the /metrics endpoint."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.metered import Metered, Outcome
from relay_server.domain.pricing import price
from relay_server.domain.provider import Usage
from relay_server.domain.request import Principal, RequestContext
from relay_server.observability.exposition import MetricsServer
from relay_server.observability.metrics import RelayMetrics
from relay_server.observability.recorder import ObservingRecorder
from relay_server.observability.request_context import bind_request, overhead_headers
from relay_server.observability.sampler import Sampler, Sources, spool_usage
from relay_server.pipeline.steps.cache import CachedMetered
from relay_server.stack.processes import free_port

pytestmark = pytest.mark.asyncio

ENTRY = CatalogEntry(
    "mdl_1", "gpt-4o-mini", "openai", "openai", "gpt-4o-mini", "chat", Decimal("0.15"), Decimal("0.60"),
    128_000, 16_384, "openai", 0,
)  # fmt: skip
PRINCIPAL = Principal("ten_1", "key_1", "ab12", "live", "inference")


def ctx(kind: str = "chat", *, provider: str | None = "openai", attempts: int = 1, stream: bool = False) -> RequestContext:
    c = RequestContext(request_id="req_1", kind=kind, body={"model": "gpt-4o-mini"}, principal=PRINCIPAL)  # type: ignore[arg-type]
    c.model, c.provider_id, c.attempts, c.stream = "gpt-4o-mini", provider, attempts, stream
    return c


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> RelayMetrics:
    return RelayMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_successful_request_counts_tokens_cost_and_latency(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    c = ctx(stream=True)
    c.started_at = time.time() - 1.5
    c.first_token_ns = c.started_ns + 200_000_000
    usage = Usage(prompt_tokens=1000, completion_tokens=500)
    cost = price(ENTRY, usage, Decimal("0.20"))
    metrics.observe_request(Metered(c, ENTRY, Outcome("success", 200), usage=usage, cost=cost))
    labels = {"kind": "chat", "model": "gpt-4o-mini", "provider": "openai"}
    assert value(registry, "relay_requests_total", **labels, status="success") == 1
    assert value(registry, "relay_tokens_total", **labels, direction="input") == 1000
    assert value(registry, "relay_tokens_total", **labels, direction="output") == 500
    assert value(registry, "relay_cost_micros_total", model="gpt-4o-mini", provider="openai") == cost.total_micros == 540
    assert value(registry, "relay_request_duration_seconds_count", **labels) == 1
    assert 1.4 < value(registry, "relay_request_duration_seconds_sum", **labels) < 10
    assert value(registry, "relay_time_to_first_token_seconds_sum", **labels) == pytest.approx(0.2)
    assert value(registry, "relay_errors_total", kind="chat", code="provider_error", http_status="502") == 0


async def test_repeated_requests_add_up_on_their_own_series(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    """The per-request observations reuse remembered children: each repeat must still land on the
    registry's live series for its labels, and other labels on theirs."""
    usage = Usage(prompt_tokens=10, completion_tokens=5)
    for _ in range(3):
        metrics.observe_request(Metered(ctx(), ENTRY, Outcome("success", 200), usage=usage))
    metrics.observe_request(Metered(ctx(provider="anthropic"), ENTRY, Outcome("success", 200), usage=usage))
    metrics.observe_attempt("openai", "success", 0.2)
    metrics.observe_attempt("openai", "success", 0.3)
    metrics.observe_overhead("chat", 0.001)
    metrics.observe_overhead("chat", 0.002)
    labels = {"kind": "chat", "model": "gpt-4o-mini", "provider": "openai"}
    assert value(registry, "relay_requests_total", **labels, status="success") == 3
    assert value(registry, "relay_tokens_total", **labels, direction="input") == 30
    assert value(registry, "relay_request_duration_seconds_count", **labels) == 3
    assert value(registry, "relay_requests_total", **{**labels, "provider": "anthropic"}, status="success") == 1
    assert value(registry, "relay_provider_attempts_total", provider="openai", outcome="success") == 2
    assert value(registry, "relay_provider_latency_seconds_sum", provider="openai") == pytest.approx(0.5)
    assert value(registry, "relay_overhead_seconds_count", kind="chat") == 2
    assert value(registry, "relay_overhead_seconds_sum", kind="chat") == pytest.approx(0.003)


async def test_errors_are_counted_by_code_and_limit_refusals_apart(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    refused = ctx(provider=None, attempts=0)
    metrics.observe_request(Metered(refused, ENTRY, Outcome("error", 429, "rate_limit_exceeded")))
    metrics.observe_request(Metered(refused, ENTRY, Outcome("error", 402, "spend_cap_exceeded")))
    metrics.observe_request(Metered(ctx(), ENTRY, Outcome("error", 502, "provider_error")))
    metrics.observe_request(Metered(ctx(), ENTRY, Outcome("timeout", 504, "request_timeout")))
    # Authentication failed: no catalog entry, no model label from the client's input.
    anonymous = RequestContext(request_id="req_2", kind="chat", body={"model": "x" * 500})
    metrics.observe_request(Metered(anonymous, None, Outcome("error", 401, "invalid_api_key")))
    assert value(registry, "relay_limit_refusals_total", code="rate_limit_exceeded") == 1
    assert value(registry, "relay_limit_refusals_total", code="spend_cap_exceeded") == 1
    assert value(registry, "relay_limit_refusals_total", code="provider_error") == 0
    assert value(registry, "relay_errors_total", kind="chat", code="request_timeout", http_status="504") == 1
    assert value(registry, "relay_requests_total", kind="chat", model="unknown", provider="none", status="error") == 1
    assert value(registry, "relay_requests_total", kind="chat", model="gpt-4o-mini", provider="none", status="error") == 2
    # A request that never got past authentication has no duration worth a histogram sample.
    assert value(registry, "relay_request_duration_seconds_count", kind="chat", model="unknown", provider="none") == 0


async def test_cache_hits_and_cancellations(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=5)
    hit = CachedMetered(ctx(provider=None), ENTRY, Outcome("cached", 200), usage=usage, cache_kind="semantic")
    metrics.observe_request(hit)
    metrics.observe_request(Metered(ctx(), ENTRY, Outcome("cancelled", 499, "client_closed_request")))
    assert value(registry, "relay_cache_hits_total", kind="chat", cache_kind="semantic") == 1
    assert value(registry, "relay_requests_total", kind="chat", model="gpt-4o-mini", provider="cache", status="cached") == 1
    assert value(registry, "relay_requests_total", kind="chat", model="gpt-4o-mini", provider="openai", status="cancelled") == 1
    assert value(registry, "relay_errors_total", kind="chat", code="client_closed_request", http_status="499") == 0


class BrokenMetrics:
    def observe_request(self, metered: Metered) -> None:
        raise RuntimeError("broken")


async def test_the_recorder_logs_first_and_survives_broken_metrics(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    recorded: list[Metered] = []

    class Inner:
        def record(self, metered: Metered) -> None:
            recorded.append(metered)

    m = Metered(ctx(), ENTRY, Outcome("success", 200))
    ObservingRecorder(Inner(), metrics).record(m)
    ObservingRecorder(Inner(), BrokenMetrics()).record(m)  # type: ignore[arg-type]
    assert recorded == [m, m]
    assert value(registry, "relay_requests_total", kind="chat", model="gpt-4o-mini", provider="openai", status="success") == 1


async def test_overhead_excludes_provider_time_and_is_observed(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    assert overhead_headers() == ()  # outside a request: no header

    @dataclass
    class Hub:
        metrics: RelayMetrics
        tracing: None = None

    with bind_request("req_9", "chat", Hub(metrics)) as scope:
        scope.started_ns -= 3_000_000_000  # 3 s ago ...
        scope.provider_ns = 2_990_000_000  # ... of which the provider took 2.99 s
        [(name, raw)] = overhead_headers()
    assert name == "x-relay-overhead-ms"
    assert 10.0 <= float(raw) < 1000
    assert value(registry, "relay_overhead_seconds_count", kind="chat") == 1


@dataclass
class GateStats:
    limits_failed_open: int = 0
    caps_failed_closed: int = 0
    caps_unchecked: int = 0
    settle_failures: int = 0


@dataclass
class Gate:
    stats: GateStats = field(default_factory=GateStats)


class Writer:
    def __init__(self) -> None:
        self.written = self.spooled = self.replayed = self.dead = 0
        self._queue: asyncio.Queue[int] = asyncio.Queue()


class Health:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    async def availability(self, ids: list[str]) -> dict[str, str]:
        return {i: self.states[i] for i in ids}


async def test_the_sampler_adds_growth_and_sets_depths(registry: CollectorRegistry, metrics: RelayMetrics, tmp_path: Path) -> None:
    gate, writer = Gate(), Writer()
    (tmp_path / "requests-1-1.jsonl").write_bytes(b"x" * 100)
    (tmp_path / "requests-2-1.open").write_bytes(b"x" * 50)
    (tmp_path / "requests.dead").write_bytes(b"x" * 999)  # dead letters are not waiting for replay
    health = Health({"openai": "open", "anthropic": "closed"})
    markup = SimpleNamespace(name="tenant_metering", stale_served=1)
    sampler = Sampler(metrics, Sources(gate, writer, tmp_path, health, lambda: ["openai", "anthropic"], policy_caches=[markup]))
    gate.stats.limits_failed_open = 3
    writer.written, writer.spooled = 10, 4
    for i in range(7):
        writer._queue.put_nowait(i)  # noqa: SLF001
    await sampler.sample()
    gate.stats.limits_failed_open = 5
    writer.written = 12
    markup.stale_served = 3
    await sampler.sample()
    await sampler.sample()  # no growth: nothing added
    assert value(registry, "relay_admission_degraded_total", outcome="limits_failed_open") == 5
    assert value(registry, "relay_request_log_rows_total", result="written") == 12
    assert value(registry, "relay_request_log_rows_total", result="spooled") == 4
    assert value(registry, "relay_policy_cache_stale_served_total", cache="tenant_metering") == 3
    assert value(registry, "relay_request_log_queue_depth") == 7
    assert value(registry, "relay_request_log_spool_bytes") == 150
    assert value(registry, "relay_request_log_spool_segments") == 2
    assert value(registry, "relay_provider_circuit_state", provider="openai") == 2
    assert value(registry, "relay_provider_circuit_state", provider="anthropic") == 0


async def test_a_failing_source_does_not_stop_the_others(registry: CollectorRegistry, metrics: RelayMetrics, tmp_path: Path) -> None:
    class DownHealth:
        async def availability(self, ids: list[str]) -> dict[str, str]:
            raise ConnectionError("redis is down")

    gate = Gate()
    gate.stats.caps_failed_closed = 2
    sampler = Sampler(metrics, Sources(gate, None, tmp_path / "missing", DownHealth(), lambda: ["openai"]))
    await sampler.sample()
    assert value(registry, "relay_admission_degraded_total", outcome="caps_failed_closed") == 2
    assert value(registry, "relay_request_log_spool_bytes") == 0
    assert spool_usage(tmp_path / "missing") == (0, 0)


async def test_the_endpoint_serves_the_registry_and_a_taken_port_is_not_fatal(metrics: RelayMetrics, registry: CollectorRegistry) -> None:
    metrics.observe_attempt("openai", "success", 0.25)
    server = MetricsServer.start("127.0.0.1", free_port(), registry)
    assert server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'relay_provider_attempts_total{outcome="success",provider="openai"} 1.0' in text
        assert "relay_provider_latency_seconds_bucket" in text
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            assert MetricsServer.start("127.0.0.1", taken.getsockname()[1], registry) is None
    finally:
        server.stop()


async def test_guardrail_decisions_are_counted_by_guardrail_and_action(registry: CollectorRegistry, metrics: RelayMetrics) -> None:
    c = ctx()
    c.note_guardrail("pii.email", "input", "redact", 2)
    c.note_guardrail("pii.email", "output", "redact")
    c.note_guardrail("injection", "input", "block")
    metrics.observe_request(Metered(c, ENTRY, Outcome("error", 400, "content_policy_violation")))
    metrics.observe_request(Metered(ctx(), ENTRY, Outcome("success", 200)))  # no guardrails: nothing counted
    assert value(registry, "relay_guardrail_decisions_total", guardrail="pii.email", action="redact") == 3
    assert value(registry, "relay_guardrail_decisions_total", guardrail="injection", action="block") == 1
    assert value(registry, "relay_guardrail_decisions_total", guardrail="injection", action="flag") == 0
