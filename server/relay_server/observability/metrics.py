"""Relay's Prometheus metrics: what they are and how a finished request feeds them.

``RelayMetrics`` creates every metric in a registry it is given (no import-time
registration in prometheus_client's global registry).  In a ``--workers N``
deployment the supervisor starts each worker with ``PROMETHEUS_MULTIPROC_DIR``
set, prometheus_client then keeps every value in a per-process mmap file, and
the supervisor's ``/metrics`` merges the files (``exposition.py``): counters
and histograms add up across workers, gauges say how (``multiprocess_mode``).

Label values are bounded on purpose: models are catalog names (an unknown
model is ``unknown``), providers are provider ids, error codes come from the
closed error table.  Tenants are not a label (the request log and the usage
API answer per-tenant questions without a series per tenant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from relay_server.domain.metered import Metered

# Seconds: from a cached answer (ms) to a long generation (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

# Refusals of Relay's own limits (not a provider's 429, which fails over).
LIMIT_CODES = frozenset({"rate_limit_exceeded", "quota_exceeded", "spend_cap_exceeded", "spend_cap_unavailable"})

CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class _Children:
    """``metric.labels(*values)``, remembered per label tuple.

    prometheus_client's ``labels()`` validates and converts the values and takes
    the metric's lock on every call (≈ 1 µs); the per-request observations ask
    for the same few children over and over.  Label values are bounded (see the
    module docstring), so this holds no more children than the metric itself,
    and Relay never removes a child, so a remembered one stays the live one.
    """

    __slots__ = ("_cache", "_labels")

    def __init__(self, metric: Any) -> None:
        self._labels = metric.labels
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._labels(*values)
        return child


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.requests = Counter(
            "relay_requests", "Finished requests.", ["kind", "model", "provider", "status"], registry=r
        )
        self.errors = Counter("relay_errors", "Failed requests by error code.", ["kind", "code", "http_status"], registry=r)
        self.latency = Histogram(
            "relay_request_duration_seconds", "Request duration, start to end (streams: to their last chunk).",
            ["kind", "model", "provider"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "relay_time_to_first_token_seconds", "Time to the first streamed token.",
            ["kind", "model", "provider"], buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "relay_overhead_seconds", "Time spent in Relay before the response headers, excluding the providers' time.",
            ["kind"], buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "relay_tokens", "Billed tokens.", ["kind", "model", "provider", "direction"], registry=r
        )
        self.cost = Counter("relay_cost_micros", "Billed cost in micro-USD (markup included).", ["model", "provider"], registry=r)
        self.cache_hits = Counter("relay_cache_hits", "Requests answered by the response cache.", ["kind", "cache_kind"], registry=r)
        self.limit_refusals = Counter("relay_limit_refusals", "Requests refused by rate limits or spend caps.", ["code"], registry=r)
        self.guardrails = Counter(
            "relay_guardrail_decisions", "Guardrail decisions (each finding, refusal, redaction or flag).",
            ["guardrail", "action"], registry=r,
        )  # fmt: skip
        self.attempts = Counter("relay_provider_attempts", "Provider attempts by how they ended.", ["provider", "outcome"], registry=r)
        # The request archiver (workers/archiver.py).
        self.archive_partitions = Counter("relay_archive_partitions", "Request partitions archived to Parquet.", registry=r)
        self.archive_rows = Counter("relay_archive_rows", "Request rows written to verified Parquet files.", registry=r)
        self.archive_bytes = Counter("relay_archive_bytes", "Bytes of verified Parquet files written.", registry=r)
        self.archive_failures = Counter("relay_archive_failures", "Archiver runs that failed on a partition.", registry=r)
        self.archive_lag = Gauge(
            "relay_archive_lag_seconds", "How long the oldest request partition still in Postgres has been due for archival.",
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.provider_latency = Histogram(
            "relay_provider_latency_seconds", "Provider response time (streams: to the first chunk).",
            ["provider"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        # Sampled from the components' own counters (sampler.py).
        self.fail_open = Counter(
            "relay_admission_degraded", "Admissions decided without Redis.", ["outcome"], registry=r
        )  # outcome: limits_failed_open | caps_failed_closed | caps_unchecked | settle_failures
        self.policy_stale = Counter(
            "relay_policy_cache_stale_served", "Policy reads answered with the previous value: the reload failed.",
            ["cache"], registry=r,
        )  # fmt: skip
        self.request_log_rows = Counter(
            "relay_request_log_rows", "Request log rows by destination.", ["result"], registry=r
        )  # result: written | spooled | replayed | sanitised (stored only after repair: an alert) | dead
        self.queue_depth = Gauge(
            "relay_request_log_queue_depth", "Request log rows waiting to be written.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.spool_bytes = Gauge(
            "relay_request_log_spool_bytes", "Bytes of request log rows spooled while Postgres was unavailable.",
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.spool_segments = Gauge(
            "relay_request_log_spool_segments", "Spool files waiting for replay.", registry=r, multiprocess_mode="livemax"
        )
        self.circuit = Gauge(
            "relay_provider_circuit_state", "Provider circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["provider"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.anomaly = Gauge(
            "relay_provider_anomaly", "1 while a provider's error rate or latency is anomalous.",
            ["provider", "signal"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.anomalies = Counter("relay_provider_anomalies", "Provider anomalies that started.", ["provider", "signal"], registry=r)

        self._per_request()

    def _per_request(self) -> None:
        """The children the per-request observations use, remembered (``_Children``)."""
        self._requests = _Children(self.requests)
        self._errors = _Children(self.errors)
        self._limit_refusals = _Children(self.limit_refusals)
        self._guardrails = _Children(self.guardrails)
        self._cache_hits = _Children(self.cache_hits)
        self._latency = _Children(self.latency)
        self._ttft = _Children(self.ttft)
        self._tokens = _Children(self.tokens)
        self._cost = _Children(self.cost)
        self._attempts = _Children(self.attempts)
        self._provider_latency = _Children(self.provider_latency)
        self._overhead = _Children(self.overhead)

    def observe_request(self, m: Metered) -> None:
        """One finished request (called exactly once per request, by the recorder)."""
        ctx, outcome, usage = m.ctx, m.outcome, m.usage
        kind = ctx.kind
        model = m.entry.relay_name if m.entry is not None else "unknown"
        provider = ctx.provider_id or ("cache" if outcome.status == "cached" else "none")
        self._requests(kind, model, provider, outcome.status).inc()
        if outcome.status in ("error", "timeout"):
            code = outcome.error_code or "unknown"
            self._errors(kind, code, str(outcome.http_status)).inc()
            if code in LIMIT_CODES and ctx.attempts == 0:
                self._limit_refusals(code).inc()
        if ctx.guardrails:
            for (guardrail, _stage, action), n in ctx.guardrails.items():
                self._guardrails(guardrail, action).inc(n)
        cache_kind = getattr(m, "cache_kind", None)
        if cache_kind:
            self._cache_hits(kind, cache_kind).inc()
        if m.entry is not None:  # authenticated and resolved: its duration says something about serving
            self._latency(kind, model, provider).observe(max(0.0, m.completed_at - ctx.started_at))
        ttft = ctx.ttft_ms()
        if ttft is not None:
            self._ttft(kind, model, provider).observe(ttft / 1000)
        if usage is not None:
            if usage.prompt_tokens:
                self._tokens(kind, model, provider, "input").inc(usage.prompt_tokens)
            if usage.completion_tokens:
                self._tokens(kind, model, provider, "output").inc(usage.completion_tokens)
        if m.cost is not None and m.cost.total_micros > 0:
            self._cost(model, provider).inc(m.cost.total_micros)

    def observe_attempt(self, provider: str, outcome: str, latency_s: float | None) -> None:
        self._attempts(provider, outcome).inc()
        if latency_s is not None and outcome != "cancelled":
            self._provider_latency(provider).observe(latency_s)

    def observe_overhead(self, kind: str, seconds: float) -> None:
        self._overhead(kind).observe(seconds)
