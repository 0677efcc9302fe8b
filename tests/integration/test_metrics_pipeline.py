"""Observability of the real pipeline (Postgres, Redis, request log, admission gate, test-mode
provider): spans per step, metrics per request, log lines with the request's context, and a
provider anomaly recorded as a health event."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from relay_server.app.metering import Metering, build_metering
from relay_server.app.observability import Observability, build_observability
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.observability.anomaly import AnomalyDetector, AnomalyWatcher
from relay_server.observability.log_lines import JsonFormatter
from relay_server.observability.request_context import bind_request
from relay_server.pipeline.inference import InferencePipeline
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.route import Router
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.providers.testmode import TestModeProvider
from relay_server.storage.postgres.catalog import PostgresCatalogStore
from relay_server.storage.postgres.keys import PostgresKeyStore
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import PostgresProviderStore
from tests.support.metering import MESSAGES, Key, make_key, make_tenant, settings_for, wire_for
from tests.support.pg import TestDatabase

pytestmark = pytest.mark.asyncio


class Served:
    def __init__(self, pipeline: InferencePipeline, hub: Observability, metering: Metering) -> None:
        self.pipeline, self.hub, self.metering = pipeline, hub, metering

    async def chat(self, key: Key, *, headers: dict[str, str] | None = None, **body: Any) -> tuple[str, Any]:
        """One request the way the API layer serves it: bound to a request scope."""
        metadata = {**key.metadata, **(headers or {})}
        request_id = new_request_id()
        with bind_request(request_id, "chat", self.hub, metadata):
            try:
                admitted = await self.pipeline.admit("chat", {"model": "gpt-4o-mini", "messages": MESSAGES, **body}, metadata, request_id)
                if admitted.ctx.stream:
                    return request_id, [c async for c in self.pipeline.stream(admitted)]
                return request_id, await self.pipeline.complete(admitted)
            except RelayError as err:
                return request_id, err

    def metric(self, name: str, **labels: str) -> float:
        return self.hub.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest_asyncio.fixture
async def served(
    database: Database, redis_client: Redis, pg_db: TestDatabase, tmp_path: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[Served]:
    settings = settings_for(pg_db.owner_dsn, pg_db.app_dsn, tmp_path, metrics_port=0)
    catalog = Catalog(PostgresCatalogStore(database))
    await catalog.load()
    wire = wire_for(redis_client)
    metering = build_metering(settings, database, redis_client, wire, runner=None)
    hub = build_observability(settings, span_exporter=exporter)
    pipeline = InferencePipeline(
        Authenticator(PostgresKeyStore(database), cache_ttl_s=60), catalog, Router(TestModeProvider()),
        hub.recorder(metering.recorder), gate=metering.gate, markups=metering.tenant_config,
    )  # fmt: skip
    await metering.start()
    yield Served(pipeline, hub, metering)
    await pipeline.drain()
    await metering.stop()
    await hub.stop()
    await wire.close()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(previous)


async def test_a_request_is_traced_step_by_step(served: Served, pg_db: TestDatabase, exporter: InMemorySpanExporter) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, rate_limits={"rpm": 100})
    request_id, response = await served.chat(key, stream=True, stream_options={"include_usage": True})
    assert isinstance(response, list) and response
    await served.pipeline.drain()
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    for name in ("relay.authenticate", "relay.admission", "relay.route", "chat gpt-4o-mini", "relay.chat"):
        assert name in names, names
    root = next(s for s in spans if s.name == "relay.chat")
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert root.attributes["relay.request_id"] == request_id
    assert root.attributes["relay.tenant_id"] == tenant
    assert root.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert root.attributes["gen_ai.usage.output_tokens"] > 0 and root.attributes["relay.cost_micros"] >= 0
    attempt = next(s for s in spans if s.name == "chat gpt-4o-mini")
    assert attempt.attributes["gen_ai.system"] == "test" and attempt.attributes["gen_ai.usage.input_tokens"] > 0
    chunks = [c for c in response if isinstance(c, dict)]
    assert attempt.attributes["gen_ai.response.id"] == chunks[0]["id"]
    assert attempt.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert tuple(attempt.attributes["gen_ai.response.finish_reasons"]) == ("stop",)


async def test_a_whole_answer_sets_the_response_attributes(
    served: Served, pg_db: TestDatabase, exporter: InMemorySpanExporter
) -> None:
    key = make_key(pg_db.owner_dsn, make_tenant(pg_db.owner_dsn), rate_limits={"rpm": 100})
    _, response = await served.chat(key, n=2, max_tokens=1)
    await served.pipeline.drain()
    attempt = next(s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o-mini")
    assert attempt.attributes["gen_ai.response.id"] == response["id"]
    assert tuple(attempt.attributes["gen_ai.response.finish_reasons"]) == ("length", "length")


async def test_requests_feed_the_metrics(served: Served, pg_db: TestDatabase) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant, rate_limits={"rpm": 2})
    results = [(await served.chat(key))[1] for _ in range(3)]
    assert [isinstance(r, RelayError) for r in results] == [False, False, True]
    _, failed = await served.chat(make_key(pg_db.owner_dsn, tenant), headers={"x-relay-test-error": "provider_error"})
    assert isinstance(failed, RelayError)
    await served.pipeline.drain()
    labels = {"kind": "chat", "model": "gpt-4o-mini", "provider": "test"}
    assert served.metric("relay_requests_total", **labels, status="success") == 2
    assert served.metric("relay_requests_total", **labels, status="error") == 1
    assert served.metric("relay_requests_total", kind="chat", model="gpt-4o-mini", provider="none", status="error") == 1
    assert served.metric("relay_limit_refusals_total", code="rate_limit_exceeded") == 1
    assert served.metric("relay_errors_total", kind="chat", code="provider_error", http_status="502") == 1
    usage = [r["usage"] for r in results[:2]]
    assert served.metric("relay_tokens_total", **labels, direction="input") == sum(u["prompt_tokens"] for u in usage)
    assert served.metric("relay_tokens_total", **labels, direction="output") == sum(u["completion_tokens"] for u in usage)
    assert served.metric("relay_provider_attempts_total", provider="test", outcome="success") == 2
    assert served.metric("relay_request_duration_seconds_count", **labels) == 3


async def test_every_log_line_of_a_request_carries_its_context(
    served: Served, pg_db: TestDatabase, log_lines: io.StringIO
) -> None:
    tenant = make_tenant(pg_db.owner_dsn)
    key = make_key(pg_db.owner_dsn, tenant)
    request_id, failed = await served.chat(key, headers={"x-relay-test-error": "provider_error"})
    assert isinstance(failed, RelayError)
    await served.pipeline.drain()
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    mine = [entry for entry in lines if entry.get("request_id") == request_id]
    messages = {entry["msg"] for entry in mine}
    assert {"provider attempt failed", "request"} <= messages, messages
    for entry in mine:  # the failover loop's line names only the request id itself: the context adds the rest
        assert entry["tenant_id"] == tenant and entry["key_hint"] == key.secret[-4:]
        assert entry["model"] == "gpt-4o-mini" and entry["provider"] == "test"
    assert key.secret not in log_lines.getvalue()


async def test_an_anomaly_becomes_a_provider_health_event(database: Database) -> None:
    clock = [50_000.0]
    detector = AnomalyDetector(window_s=60, baseline_s=600, min_samples=20, clock=lambda: clock[0])
    rng = random.Random(11)
    for second in range(660):
        latency = 400.0 if second < 600 else 2500.0
        for _ in range(2):
            detector.observe("mistral", latency * rng.uniform(0.9, 1.1), ok=True)
        clock[0] += 1
    watcher = AnomalyWatcher(detector, PostgresProviderStore(database))
    assert [a.provider_id for a in await watcher.check()] == ["mistral"]
    assert await watcher.check() == []
    async with database.system_tx() as conn:
        events = await (await conn.execute(
            "SELECT status, message FROM provider_health_events WHERE provider_id = 'mistral'"
        )).fetchall()  # fmt: skip
        status = await (await conn.execute("SELECT status FROM providers WHERE id = 'mistral'")).fetchone()
    assert [e["status"] for e in events] == ["degraded"]
    assert events[0]["message"].startswith("anomaly: mean latency")
    assert status["status"] == "degraded"
