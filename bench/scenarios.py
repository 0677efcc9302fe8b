"""Scenarios and how one is measured against a target (the mock, or Relay).

A measurement = warm-up (not counted), CPU snapshot, the load run, a short
settle (batched request-log writes land in Postgres), CPU snapshot again, the
workers' memory, and the Redis commands and Postgres transactions the run
caused (per request, they show the cost of each request's round trips).  Non-streaming runs use wrk when it is installed;
streaming runs always use the Python client, which measures time to first
token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import procstats
from bench.http1 import Connection, HttpError, Target, render_request
from bench.loadgen import LoadResult, RequestSpec, drive
from bench.peers import Peer
from bench.stack import BenchStack
from bench.wrkdriver import find_wrk, run_wrk

# Long enough for batched request-log writes and Postgres' stats flush (~1 s).
SETTLE_S = 1.2
TEST_LATENCY_HEADER = "x-relay-test-latency-ms"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    body: dict[str, Any]
    stream: bool = False
    guarded: bool = False  # sent with the seeded key that has every guardrail on

    @property
    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body)


_MESSAGES = [{"role": "user", "content": "Write one short sentence about network latency."}]
SCENARIOS = (
    Scenario("chat", "/chat/completions", {"model": "gpt-4o-mini", "messages": _MESSAGES, "max_tokens": 64}),
    Scenario(
        "stream",
        "/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": _MESSAGES,
            "max_tokens": 20,  # replaced by the mock's chunk count (body_for)
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
    ),
    # The same request through a virtual model (bench/seed.py: `bench-fast`, lowest-latency, one target):
    # beside `chat`, the routing cost of an alias against a plain model.
    Scenario("chat-alias", "/chat/completions", {"model": "bench-fast", "messages": _MESSAGES, "max_tokens": 64}),
    # `chat` and `stream` with every local guardrail on (bench/seed.py GUARDED_POLICY): beside
    # them, what guardrails cost end to end (input scans at admission, output redaction per chunk).
    Scenario("chat-guarded", "/chat/completions", {"model": "gpt-4o-mini", "messages": _MESSAGES, "max_tokens": 64},
             guarded=True),
    Scenario(
        "stream-guarded",
        "/chat/completions",
        {"model": "gpt-4o-mini", "messages": _MESSAGES, "max_tokens": 20, "stream": True,
         "stream_options": {"include_usage": True}},
        stream=True, guarded=True,
    ),
    Scenario(
        "embeddings",
        "/embeddings",
        {"model": "text-embedding-3-small", "input": "The quick brown fox jumps over the lazy dog"},
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass
class Mode:
    """How Relay serves a scenario in this run: ``live`` (through the mock) or ``test``."""

    name: str  # live | test | broken
    key: str = field(repr=False)
    detail: str = ""


@dataclass
class Measurement:
    result: LoadResult
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Cores that processes outside the stack and the bench kept busy meanwhile
    # (other jobs on the machine): a large value means the figures are noisy.
    foreign_cores: float = 0.0
    worker_memory: dict[int, procstats.Memory] = field(default_factory=dict)
    redis_calls: dict[str, int] = field(default_factory=dict)  # command → calls during the run
    pg_xacts: int = 0  # transactions committed or rolled back in Relay's database during the run
    # Share of the workers group's CPU per process (the supervisor, if any, included):
    # with few HTTP/2 connections from Envoy, SO_REUSEPORT may leave a worker idle.
    worker_cpu_share: dict[int, float] = field(default_factory=dict)


def groups(stack: BenchStack, *, relay: bool) -> list[procstats.Group]:
    assert stack.mock is not None
    found = [procstats.Group("mock", (stack.mock.pid,))]
    if relay:
        assert stack.envoy is not None and stack.server is not None and stack.redis is not None
        found += [
            procstats.Group("envoy", (stack.envoy.pid,)),
            procstats.Group("workers", (stack.server.pid,), descendants=True),
            procstats.Group("redis", (stack.redis.pid,)),
        ]
        if stack.postgres_pid is not None:
            found.append(procstats.Group("postgres", (stack.postgres_pid,), descendants=True))
    return found


def spec_for(stack: BenchStack, scenario: Scenario, *, relay: bool, mode: Mode | None,
             peer: Peer | None = None) -> RequestSpec:  # fmt: skip
    if peer is not None:
        headers = {"Content-Type": "application/json", **peer.headers}
        return RequestSpec(peer.url + scenario.path, body_for(stack, scenario), headers, stream=scenario.stream)
    base = stack.relay_url if relay else stack.mock_url
    headers = {"Content-Type": "application/json"}
    if relay:
        assert mode is not None
        headers["Authorization"] = f"Bearer {mode.key}"
        if mode.name == "test" and scenario.stream:
            # Test mode has no upstream: let it pace chunks like the mock does.
            headers[TEST_LATENCY_HEADER] = str(round(stack.options.chunk_interval_ms))
    else:
        headers["Authorization"] = "Bearer sk-bench-direct"
    return RequestSpec(base + scenario.path, body_for(stack, scenario), headers, stream=scenario.stream)


def body_for(stack: BenchStack, scenario: Scenario) -> bytes:
    """The request body; streams ask for as many tokens as the mock sends chunks,
    so a test-mode fallback streams about as many chunks as the mock does."""
    if not scenario.stream:
        return scenario.body_bytes
    return orjson.dumps({**scenario.body, "max_tokens": stack.options.chunks})


def run_load(spec: RequestSpec, *, concurrency: int, requests: int, duration_s: float, use_wrk: bool) -> LoadResult:
    # wrk drives the concurrent runs.  At c=1 the Python client measures: wrk 4.1's
    # latency histogram was seen reporting p90 > 1 ms for a run whose request count
    # bounds the mean at ~15 us, and c=1 is where the latency targets are read.
    if use_wrk and concurrency > 1 and not spec.stream and find_wrk() and TEST_LATENCY_HEADER not in spec.headers:
        return run_wrk(spec, concurrency=concurrency, requests=requests, duration_s=duration_s,
                       threads=min(2, concurrency))  # fmt: skip
    return drive(spec, concurrency=concurrency, requests=requests, duration_s=duration_s)


def measure(
    stack: BenchStack,
    scenario: Scenario,
    *,
    relay: bool,
    mode: Mode | None,
    concurrency: int,
    requests: int,
    duration_s: float,
    use_wrk: bool,
    warmup_s: float = 1.0,
    baseline: dict[str, float] | None = None,
    peer: Peer | None = None,
) -> Measurement:
    """One measured run.  ``baseline`` (CPU seconds per second each group burns
    while idle: background loops, timers) is subtracted from the CPU deltas, so a
    slow scenario is not charged for the housekeeping that ran meanwhile.
    With ``peer``, the run goes through that gateway instead (``relay`` must be
    False); its process is charged as the group named after it."""
    spec = spec_for(stack, scenario, relay=relay, mode=mode, peer=peer)
    drive(spec, concurrency=concurrency, requests=max(50, concurrency * 10), duration_s=warmup_s)
    watched = groups(stack, relay=relay)
    if peer is not None:
        watched.append(procstats.Group(peer.name, (peer.pid,), descendants=True))
    calls_before, xacts_before = (redis_calls(stack), pg_xacts(stack)) if relay else ({}, 0)
    before = procstats.snapshot(watched)
    machine_before = procstats.machine_sample()
    started = time.monotonic()
    result = run_load(spec, concurrency=concurrency, requests=requests, duration_s=duration_s, use_wrk=use_wrk)
    time.sleep(SETTLE_S)
    after = procstats.snapshot(watched)
    elapsed = time.monotonic() - started
    raw = procstats.cpu_delta_s(before, after)
    foreign = procstats.foreign_s(machine_before, procstats.machine_sample(), sum(raw.values()))
    cpu = {name: max(0.0, used - (baseline or {}).get(name, 0.0) * elapsed) for name, used in raw.items()}
    if peer is not None:
        return Measurement(result, cpu, max(0.0, foreign / elapsed), dict(procstats.memories([peer.pid])))
    if not relay:
        return Measurement(result, cpu, max(0.0, foreign / elapsed))
    assert stack.server is not None
    memory = procstats.memories(procstats.worker_pids(stack.server.pid))
    calls = {k: v - calls_before.get(k, 0) for k, v in redis_calls(stack).items() if v > calls_before.get(k, 0)}
    calls.pop("info", None)  # the bench's own INFO
    per_worker = procstats.per_pid_delta_s(before, after, "workers")
    total = sum(per_worker.values()) or 1.0
    share = {pid: round(used / total, 3) for pid, used in per_worker.items()}
    return Measurement(
        result, cpu, max(0.0, foreign / elapsed), dict(memory), calls, pg_xacts(stack) - xacts_before, share
    )


def idle_baseline(stack: BenchStack, seconds: float = 3.0) -> dict[str, float]:
    """CPU seconds per second each group uses with no traffic at all."""
    watched = groups(stack, relay=True)
    before = procstats.snapshot(watched)
    time.sleep(seconds)
    after = procstats.snapshot(watched)
    return {name: used / seconds for name, used in procstats.cpu_delta_s(before, after).items()}


def redis_calls(stack: BenchStack) -> dict[str, int]:
    """Calls per command since Redis started (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if isinstance(v, dict)}


def pg_xacts(stack: BenchStack) -> int:
    """Transactions in Relay's database so far.  Backends report them about once a
    second, hence the settle time before the second reading."""
    import psycopg

    with psycopg.connect(stack.owner_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


# -- which key works --------------------------------------------------------


def mock_stats(stack: BenchStack) -> dict[str, int]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{stack.mock_port}/stats", timeout=5) as response:
        return dict(orjson.loads(response.read()))


def _probe(stack: BenchStack, scenario: Scenario, key: str, extra: dict[str, str]) -> tuple[int, bytes]:
    import asyncio

    target = Target.parse(stack.relay_url + scenario.path)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}", **extra}
    raw = render_request(target, "POST", headers, body_for(stack, scenario))

    async def once() -> tuple[int, bytes]:
        conn = Connection(target, timeout_s=30)
        try:
            return await conn.request(raw)
        finally:
            conn.close()

    try:
        return asyncio.run(once())
    except HttpError as exc:
        return 0, str(exc).encode()


def detect_mode(stack: BenchStack, scenario: Scenario) -> Mode:
    """Live when a live-key request reaches the mock and succeeds; else test; else broken."""
    assert stack.seeded is not None
    before = mock_stats(stack).get("/v1" + scenario.path, 0)
    live = stack.seeded.guarded_key if scenario.guarded else stack.seeded.live_key
    status, body = _probe(stack, scenario, live, {})
    reached = mock_stats(stack).get("/v1" + scenario.path, 0) > before
    if status == 200 and reached and (not scenario.stream or b"data: [DONE]" in body):
        return Mode("live", live, "live key → Envoy → workers → mock upstream")
    why = f"live key answered {status}: {body[:200].decode(errors='replace')}" if status != 200 else (
        "live key answered 200 but the mock saw no request"
    )
    extra = {TEST_LATENCY_HEADER: str(round(stack.options.chunk_interval_ms))} if scenario.stream else {}
    status, body = _probe(stack, scenario, stack.seeded.test_key, extra)
    if status == 200:
        return Mode("test", stack.seeded.test_key, f"fell back to the test key ({why})")
    return Mode("broken", stack.seeded.test_key, f"{why}; test key answered {status}: {body[:200]!r}")
