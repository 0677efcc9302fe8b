"""Checks of the bench's own parts (no timing asserts): the mock upstream over
real sockets, the HTTP client and drivers, and the parsers behind the report.

Run: ``PYTHONPATH=server:proto_python:sdk_python:. .venv/bin/pytest -q bench/test_bench.py``
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from bench import before_after, compare, floor_compare, peers, pinning, profile, report, soak, stages, wrkdriver
from bench.http1 import Connection, Target, render_request
from bench.loadgen import LoadResult, RequestSpec, drive_async, percentile
from bench.mock_upstream import MockConfig, start
from bench.scenarios import Measurement, Mode
from relay_server.stack.processes import free_port

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}})


@pytest_asyncio.fixture
async def mock_port() -> AsyncIterator[int]:
    server = await start(MockConfig(chunks=5, chunk_interval_s=0.001, embedding_dims=8))
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _call(port: int, path: str, body: bytes | None, method: str = "POST", **headers: str) -> tuple[int, bytes]:
    target = Target.parse(f"http://127.0.0.1:{port}{path}")
    conn = Connection(target, timeout_s=5)
    try:
        return await conn.request(render_request(target, method, headers, body or b""))
    finally:
        conn.close()


def _events(body: bytes) -> list[bytes]:
    return [e[6:] for e in body.split(b"\n\n") if e.startswith(b"data: ")]


@pytest.mark.asyncio
async def test_mock_chat_json_and_usage(mock_port: int) -> None:
    status, body = await _call(mock_port, "/v1/chat/completions", CHAT)
    assert status == 200
    reply = orjson.loads(body)
    assert reply["object"] == "chat.completion"
    assert reply["usage"]["completion_tokens"] == 5
    assert reply["choices"][0]["message"]["content"] == "word0 word1 word2 word3 word4"


@pytest.mark.asyncio
async def test_mock_stream_has_chunks_usage_and_done(mock_port: int) -> None:
    status, body = await _call(mock_port, "/v1/chat/completions", STREAM)
    assert status == 200
    events = _events(body)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [c for c in contents if c] == [f"word{i} " for i in range(5)]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 12 + 5


@pytest.mark.asyncio
async def test_mock_stream_without_include_usage_sends_no_usage(mock_port: int) -> None:
    status, body = await _call(mock_port, "/v1/chat/completions", orjson.dumps({"stream": True}))
    assert status == 200
    assert all(b'"usage"' not in e for e in _events(body))


@pytest.mark.asyncio
async def test_mock_embeddings_models_stats_and_errors(mock_port: int) -> None:
    status, body = await _call(mock_port, "/v1/embeddings", b'{"input": "x"}')
    assert status == 200 and len(orjson.loads(body)["data"][0]["embedding"]) == 8
    status, body = await _call(mock_port, "/v1/models", None, method="GET")
    assert status == 200 and "gpt-4o-mini" in {m["id"] for m in orjson.loads(body)["data"]}
    assert (await _call(mock_port, "/v1/chat/completions", b"not json"))[0] == 400
    assert (await _call(mock_port, "/v1/chat/completions", b"[1]"))[0] == 400
    assert (await _call(mock_port, "/v2/nothing", b"{}"))[0] == 404
    assert (await _call(mock_port, "/v1/embeddings", None, method="GET"))[0] == 405
    status, body = await _call(mock_port, "/stats", None, method="GET", Authorization="Bearer x")
    stats = orjson.loads(body)
    assert stats["/v1/embeddings"] == 2 and stats["/v1/chat/completions"] == 2 and stats["authorized"] == 1


@pytest.mark.asyncio
async def test_mock_keeps_alive_and_reads_chunked_bodies(mock_port: int) -> None:
    target = Target.parse(f"http://127.0.0.1:{mock_port}/v1/chat/completions")
    conn = Connection(target, timeout_s=5)
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT)
    )
    try:
        for raw in (render_request(target, "POST", {}, CHAT), chunked, render_request(target, "POST", {}, STREAM)):
            status, _ = await conn.request(raw)
            assert status == 200
    finally:
        conn.close()
    status, body = await _call(mock_port, "/stats", None, method="GET")
    assert orjson.loads(body)["/v1/chat/completions"] == 3


@pytest.mark.asyncio
async def test_drive_stops_at_the_request_budget_and_measures_ttft(mock_port: int) -> None:
    spec = RequestSpec(f"http://127.0.0.1:{mock_port}/v1/chat/completions", STREAM, {}, stream=True)
    result = await drive_async(spec, concurrency=3, requests=7, duration_s=30)
    assert result.ok == 7 and result.errors == 0
    assert len(result.ttft_s) == 7 and result.content_chunks == 7 * 5
    assert all(t <= lat for t, lat in zip(sorted(result.ttft_s), sorted(result.latencies_s)))


@pytest.mark.asyncio
async def test_drive_counts_http_and_connection_errors(mock_port: int) -> None:
    bad = RequestSpec(f"http://127.0.0.1:{mock_port}/v1/nope", b"{}", {})
    result = await drive_async(bad, concurrency=2, requests=4, duration_s=30)
    assert result.ok == 0 and result.errors == 4 and result.statuses["404"] == 4
    assert result.first_error.startswith("404")
    closed = RequestSpec(f"http://127.0.0.1:{free_port()}/v1/x", b"{}", {})
    result = await drive_async(closed, concurrency=1, requests=3, duration_s=30)
    assert result.ok == 0 and result.statuses["io_error"] == 3


def test_targets_are_loopback_only() -> None:
    with pytest.raises(ValueError):
        Target.parse("http://10.0.0.1:80/v1")
    with pytest.raises(ValueError):
        Target.parse("https://127.0.0.1:443/v1")
    assert Target.parse("http://localhost:8080/v1/x").path == "/v1/x"


@pytest.mark.asyncio
async def test_drive_rejects_bad_bounds() -> None:
    spec = RequestSpec("http://127.0.0.1:1/v1", b"", {})
    for kwargs in ({"concurrency": 0, "requests": 1, "duration_s": 1}, {"concurrency": 1, "requests": 1, "duration_s": 0}):
        with pytest.raises(ValueError):
            await drive_async(spec, **kwargs)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_wrk_summary_parsing() -> None:
    line = (
        'BENCH_JSON {"requests":1000,"duration_us":2000000,"bytes":5,"err_connect":0,"err_read":1,"err_write":0,'
        '"err_status":10,"err_timeout":0,"p50_us":1500.0,"p90_us":2000.0,"p99_us":4000.0,"mean_us":1.0,"max_us":9.0}\n'
    )
    result = wrkdriver._parse(["BENCH_THREAD_DONE\n", line], 32, "")
    assert result.ok == 990 and result.errors == 11 and result.rps == 495
    assert result.latency_ms(50) == 1.5 and result.latency_ms(99) == 4.0
    broken = wrkdriver._parse(["garbage\n"], 1, "unable to connect")
    assert broken.ok == 0 and "unable to connect" in broken.first_error


def test_profile_parsing_ranks_frames_and_skips_idle_pool_threads() -> None:
    text = "\n".join([
        "<module> (/x/server/relay_server/__main__.py:5);admit (/x/server/relay_server/pipeline/steps/admission.py:200);"
        "pack_command (/v/lib/python3.11/site-packages/redis/asyncio/connection.py:1357) 6",
        "<module> (/x/server/relay_server/__main__.py:5);dumps (/v/lib/python3.11/site-packages/orjson/x.py:1) 2",
        "_bootstrap (/usr/lib/python3.11/threading.py:1002);run (/usr/lib/python3.11/threading.py:982) 5",
        "_bootstrap (/usr/lib/python3.11/threading.py:1002);Thread.run (/usr/lib/python3.11/threading.py:982) 4",
        "Thread.run (/usr/lib/python3.11/threading.py:982);BufferedLineHandler._tick (/x/server/relay_server/logging_setup.py:119) 3",
        "not a stack line",
    ])  # fmt: skip
    prof = profile.parse(text)
    assert prof.samples == 13 and prof.idle_skipped == 7
    assert prof.self_time.most_common(1)[0] == ("pack_command (redis/asyncio/connection.py:1357)", 6)
    assert prof.inclusive["admit (relay_server/pipeline/steps/admission.py)"] == 6
    assert prof.areas["redis"] == 6 and prof.areas["orjson"] == 2
    assert "pack_command" in profile.render(prof)


def test_floor_compare_splits_the_loop_from_the_gateways_python_and_leaves_threads_out() -> None:
    text = "\n".join([
        "<module> (/x/server/relay_server/__main__.py:5);_serve (/x/server/relay_server/cli.py:37) 6",
        "<module> (/x/server/relay_server/__main__.py:5);_serve (/x/server/relay_server/cli.py:37);"
        "admit (/x/server/relay_server/pipeline/steps/admission.py:200) 3",
        "serve (/x/server/relay_server/api/door.py:105) 1",
        "Thread._bootstrap (/usr/lib/python3.11/threading.py:1002);Thread.run (/usr/lib/python3.11/threading.py:982) 9",
        "not a stack line",
    ])  # fmt: skip
    row = floor_compare.split("relay", text, requests=100, cpu_us=1000.0)
    assert (row.loop, row.python) == (6, 4)
    assert row.us(row.loop) == 600.0 and row.us(row.python) == 400.0  # the measured CPU shared by samples
    assert row.top.most_common(1)[0] == ("admit (relay_server/pipeline/steps/admission.py:200)", 3)
    table = floor_compare.render([row], "request", top=1)
    assert "| event loop + gRPC core | 600 |" in table and "admit" in table


def test_soak_verdict_flat_and_growing() -> None:
    def samples(values: list[float]) -> list[dict[str, object]]:
        return [{"requests": (i + 1) * 100, "rss_mb": {"1": v}, "peak_rss_mb": {"1": v}} for i, v in enumerate(values)]

    flat = soak._verdict(samples([120, 130, 130.5, 131, 131.2]), 0, 1.0)
    assert flat["flat"] is True and flat["growth_mb"] == 1.2
    growing = soak._verdict(samples([120, 130, 140, 150, 160]), 0, 1.0)
    assert growing["flat"] is False and growing["growth_mb"] == 30


def test_table_renders_rows_without_direct_side() -> None:
    row: dict[str, Any] = {
        "scenario": "chat-scale", "workers": 2, "concurrency": 32, "mode": "live",
        "relay": {"driver": "wrk", "rps": 900.0, "p50_ms": 30.0, "p99_ms": 60.0, "errors": 0},
        "cpu_ms_per_request": {"envoy_plus_workers": 1.5, "envoy": 0.2, "workers": 1.3, "redis": 0.2,
                               "postgres": 0.05},
        "worker_rss_mb": {"1": 120.0}, "worker_peak_rss_mb": {"1": 121.0},
    }  # fmt: skip
    text = report.table([row])
    assert "chat-scale" in text and "1.500 (0.200/1.300)" in text and "120/121" in text
    assert "chat-scale #2" in report.table([{**row, "run": 2}]) and "#1" not in report.table([{**row, "run": 1}])
    verdicts = report.targets([], [row, {**row, "workers": 1, "relay": {**row["relay"], "rps": 450.0}}], None)
    assert any("scales" in v["target"] for v in verdicts)


# -- peers: ratios and verdicts (pure) ---------------------------------------


def _load(ok: int, duration_s: float, latency_ms: float, ttft_ms: float | None = None) -> LoadResult:
    result = LoadResult("python", 1, ok=ok, duration_s=duration_s)
    result.latencies_s = [latency_ms / 1000] * ok
    if ttft_ms is not None:
        result.ttft_s = [ttft_ms / 1000] * ok
    return result


def _relay_row(scenario: str, c: int, relay: LoadResult, direct: LoadResult, cpu_s: dict[str, float]) -> report.Row:
    return report.make_row(scenario, 1, c, Mode("live", "k"), Measurement(relay, cpu_s), Measurement(direct, {}))


def test_peer_row_and_side_by_side_ratios() -> None:
    direct = _load(1000, 1.0, 0.1)
    relay = _relay_row("chat", 1, _load(500, 1.0, 1.1), direct,
                       {"envoy": 0.1, "workers": 0.4, "redis": 0.05, "postgres": 0.05})  # fmt: skip
    peer = compare.peer_row("chat", 1, "portkey", Measurement(_load(400, 1.0, 1.6), {"portkey": 0.8, "mock": 0.1}),
                            Measurement(direct, {}))
    assert peer["cpu_ms_per_request"] == 2.0 and peer["added_p50_ms"] == 1.5 and peer["throughput_ratio"] == 0.4
    [row] = compare.side_by_side([relay], [peer])
    assert row["cpu_relay_ms"] == 1.0 and row["cpu_relay_all_ms"] == 1.2 and row["cpu_peer_ms"] == 2.0
    assert row["cpu_ratio"] == 0.5 and row["cpu_ratio_all"] == 0.6
    assert row["added_p50_relay_ms"] == 1.0 and row["added_p50_diff_ms"] == -0.5
    assert "0.50" in compare.table([row]) and "1.000/1.200/2.000" in compare.table([row])
    # A peer row with no Relay row of the same scenario and concurrency is not compared.
    assert compare.side_by_side([relay], [{**peer, "concurrency": 32}]) == []


def _comparison(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": "chat", "concurrency": 1, "peer": "portkey", "cpu_ratio": 0.7, "cpu_ratio_all": 0.9,
        "cpu_relay_ms": 0.7, "cpu_peer_ms": 1.0, "added_p50_relay_ms": 1.0, "added_p50_peer_ms": 1.5,
        "added_p50_diff_ms": -0.5, "throughput_ratio_relay": 0.96, "throughput_ratio_peer": 0.9,
        "ttft_overhead_p50_relay_ms": 0.9, "ttft_overhead_p50_peer_ms": 27.0, "ttft_overhead_ratio": 0.033,
    }  # fmt: skip
    return {**base, **overrides}


def _met(verdicts: list[dict[str, Any]]) -> dict[str, bool | None]:
    return {v["target"].split(" ")[0] + " " + v["target"].split(" ")[1]: v["met"] for v in verdicts}


def test_peer_targets_meet_and_miss_on_their_thresholds() -> None:
    rows = [_comparison(), _comparison(concurrency=32), _comparison(scenario="stream", concurrency=32),
            _comparison(scenario="stream")]  # fmt: skip
    assert _met(compare.targets(rows)) == {"CPU per": True, "added latency": True, "streaming throughput": True,
                                           "TTFT overhead": True}  # fmt: skip
    # CPU: every chat concurrency must be at or under 0.8x; the bound itself is met.
    assert _met(compare.targets([_comparison(cpu_ratio=0.8), _comparison(concurrency=32, cpu_ratio=0.81)]))[
        "CPU per"] is False  # fmt: skip
    assert _met(compare.targets([_comparison(cpu_ratio=0.8)]))["CPU per"] is True
    # Added latency: Relay must not add more than the peer at c=1.
    assert _met(compare.targets([_comparison(added_p50_relay_ms=1.6)]))["added latency"] is False
    # Streaming at c=32 against direct, not against the peer.
    slow = _comparison(scenario="stream", concurrency=32, throughput_ratio_relay=0.94, throughput_ratio_peer=0.5)
    assert _met(compare.targets([slow]))["streaming throughput"] is False
    # TTFT: both the absolute 1 ms and the 0.1x ratio.
    over_ms = _comparison(scenario="stream", ttft_overhead_p50_relay_ms=1.2, ttft_overhead_ratio=0.04)
    over_ratio = _comparison(scenario="stream", ttft_overhead_p50_relay_ms=0.5, ttft_overhead_ratio=0.2)
    assert _met(compare.targets([over_ms]))["TTFT overhead"] is False
    assert _met(compare.targets([over_ratio]))["TTFT overhead"] is False
    # A missing figure is not a verdict either way.
    assert _met(compare.targets([_comparison(cpu_ratio=None)]))["CPU per"] is None
    assert compare.targets([]) == []


def test_peer_manifest_pins_the_gateway_and_its_runtime_dependencies() -> None:
    m = peers.manifest()
    assert m["dependencies"] == {"@portkey-ai/gateway": peers.PORTKEY_VERSION}
    overrides = m["overrides"]
    assert isinstance(overrides, dict) and overrides["@hono/node-server"] == "1.13.5"
    assert all(v[0].isdigit() for v in overrides.values())  # exact versions, no ranges
    headers = peers.portkey_headers("http://127.0.0.1:9/v1")
    assert headers["x-portkey-provider"] == "openai" and headers["x-portkey-custom-host"] == "http://127.0.0.1:9/v1"


def test_wrk_extra_headers_leave_out_what_the_script_sets_itself() -> None:
    text = wrkdriver.extra_headers({"Content-Type": "application/json", "Authorization": "Bearer k",
                                    "x-portkey-provider": "openai", "x-b": "1"})  # fmt: skip
    assert text.split("\n") == ["x-portkey-provider: openai", "x-b: 1"]


# -- pinning and per-stage attribution (pure) ---------------------------------


def test_pinning_split_keeps_driver_cores_apart() -> None:
    two = pinning.split([1, 0])
    assert two is not None and two.driver == (0,) and two.workers == (1,)
    assert "workers on core(s) 1" in two.describe()
    four = pinning.split([0, 1, 2, 3], driver_cores=2)
    assert four is not None and four.workers == (2, 3)
    assert pinning.split([0]) is None and pinning.split([0, 1], driver_cores=2) is None


_R = "/x/server/relay_server/"


def test_stage_classification_innermost_rule_wins() -> None:
    text = "\n".join([
        # Redis wire code under the admission step counts as admission.
        (f"run (a/asyncio/runners.py:1);serve ({_R}api/door.py:77);admit ({_R}pipeline/steps/admission.py:146);"
         f"_flush ({_R}storage/redis/wire.py:119) 4"),
        # The Redis protocol's own callback, straight from the loop: its own row.
        f"Runner.run (a/asyncio/runners.py:118);_Protocol._flush ({_R}storage/redis/wire.py:119) 3",
        "Runner.run (a/asyncio/runners.py:118) 10",
        f"serve ({_R}api/door.py:77);AdmissionGate.settle ({_R}pipeline/steps/admission.py:300) 2",
        f"serve ({_R}api/door.py:92) 5",
        "Thread.run (/usr/lib/python3.11/threading.py:982) 7",
        # The log flusher asleep between batches is idle; its write is the log stage.
        f"Thread.run (/usr/lib/python3.11/threading.py:982);BufferedLineHandler._tick ({_R}logging_setup.py:119) 6",
        (f"Thread.run (/usr/lib/python3.11/threading.py:982);BufferedLineHandler._tick ({_R}logging_setup.py:120);"
         f"BufferedLineHandler.flush ({_R}logging_setup.py:105) 1"),
    ])  # fmt: skip
    s = stages.attribute(text, stages.NON_STREAM_RULES)
    assert s.total == 25  # the idle pool thread and the sleeping log flusher are left out
    assert s.by_stage == {"admission": 4, "Redis client I/O (every stage's calls)": 3, stages.LOOP: 10, "settle": 2,
                          "response write": 5, "log": 1}  # fmt: skip
    stream = stages.attribute(f"serve ({_R}api/door.py:96);feed ({_R}providers/sse.py:40) 3", stages.STREAM_RULES)
    assert stream.by_stage == {"upstream read/parse": 3}


def test_stage_table_splits_worker_cpu_by_share_and_adds_processes() -> None:
    s = stages.StageSamples(total=4, by_stage=Counter({"auth": 1, stages.LOOP: 3}))
    rows = stages.stage_table(s, worker_ms=0.8, processes_ms={"envoy": 0.2})
    by = {r["stage"]: r for r in rows}
    assert by[f"worker: {stages.LOOP}"]["us"] == pytest.approx(600) and by["worker: auth"]["us"] == pytest.approx(200)
    assert by["envoy"]["share"] == pytest.approx(0.2) and rows[-1]["stage"] == "total" and rows[-1]["us"] == 1000
    per_event = stages.stage_table(s, worker_ms=0.8, processes_ms={"envoy": 0.2}, per="event", divisor=10)
    assert per_event[-1]["us"] == pytest.approx(100) and "µs/event" in stages.render("t", per_event)


def test_peer_verdicts_across_runs_need_every_run() -> None:
    met = compare.targets([_comparison()])
    missed = compare.targets([_comparison(cpu_ratio=0.9)])
    unknown = compare.targets([_comparison(cpu_ratio=None)])
    [cpu] = [v for v in compare.across_runs([met, missed, met]) if v["target"].startswith("CPU")]
    assert cpu["met"] is False and cpu["note"] == "met in 2 of 3 runs"
    assert "run 2: " in cpu["measured"] and "0.9x" in cpu["measured"]
    [cpu] = [v for v in compare.across_runs([met, met]) if v["target"].startswith("CPU")]
    assert cpu["met"] is True and cpu["note"] == "met in 2 of 2 runs"
    [cpu] = [v for v in compare.across_runs([met, unknown]) if v["target"].startswith("CPU")]
    assert cpu["met"] is None
    assert compare.across_runs([met]) == met  # one run: its own verdicts, unchanged


def test_side_by_side_pairs_rows_of_the_same_run() -> None:
    direct = _load(1000, 1.0, 0.1)
    relay = [{**_relay_row("chat", 1, _load(500, 1.0, 1.1), direct, {"envoy": 0.1 * run, "workers": 0.4}), "run": run}
             for run in (1, 2)]  # fmt: skip
    peer = compare.peer_row("chat", 1, "portkey", Measurement(_load(400, 1.0, 1.6), {"portkey": 0.8}),
                            Measurement(direct, {}))  # fmt: skip
    pairs = compare.side_by_side(relay, [{**peer, "run": 2}, {**peer, "run": 1}])
    assert [(p["run"], p["cpu_relay_ms"]) for p in pairs] == [(2, 1.2), (1, 1.0)]


def _peer(scenario: str, c: int, run: int = 1, **values: Any) -> dict[str, Any]:
    return {"scenario": scenario, "concurrency": c, "run": run, **values}


def test_floor_targets_judge_the_floor_against_the_peer_of_the_same_run() -> None:
    peer = [_peer("chat", 1, cpu_ms_per_request=1.0, added_p50_ms=1.0), _peer("chat", 32, cpu_ms_per_request=1.0),
            _peer("stream", 1, ttft_overhead_p50_ms=20.0)]  # fmt: skip
    floor = [_peer("chat", 1, cpu_ms_per_request=0.6, added_p50_ms=0.8), _peer("chat", 32, cpu_ms_per_request=0.8),
             _peer("stream", 32, throughput_ratio=0.97), _peer("stream", 1, ttft_overhead_p50_ms=1.2)]  # fmt: skip
    met = {v["target"].split(":")[1].strip().split(" ")[0]: v["met"] for v in compare.floor_targets(peer, floor, 1)}
    # 0.8x is met at its bound; TTFT misses the absolute 1 ms although it is 0.06x the peer's.
    assert met == {"CPU": True, "added": True, "streaming": True, "TTFT": False}
    slower = [{**r, "cpu_ms_per_request": 0.9} if r["scenario"] == "chat" and r["concurrency"] == 32 else r for r in floor]
    assert compare.floor_targets(peer, slower, 1)[0]["met"] is False
    # Over runs: met only if met in every run; rows of another run are not mixed in.
    two = compare.floor_targets([*peer, *[{**r, "run": 2} for r in peer]],
                                [*floor, *[{**r, "run": 2} for r in slower]], 2)  # fmt: skip
    assert two[0]["met"] is False and two[0]["note"] == "met in 1 of 2 runs"
    assert compare.floor_targets(peer, [], 1) == []


@pytest.mark.asyncio
async def test_floor_gateway_passes_the_upstream_bytes_through_envoy(mock_port: int, tmp_path: Any) -> None:
    from bench import floor_gateway

    gateway = floor_gateway.start_floor(f"http://127.0.0.1:{mock_port}/v1", tmp_path, 1)
    try:
        for body in (CHAT, STREAM):
            direct = await _call(mock_port, "/v1/chat/completions", body)
            through = await _call(gateway.port, "/v1/chat/completions", body, **{"Content-Type": "application/json"})
            assert through[0] == 200
            if body is CHAT:
                assert orjson.loads(through[1])["choices"] == orjson.loads(direct[1])["choices"]
            else:
                assert _events(through[1])[-1] == b"[DONE]" and len(_events(through[1])) == len(_events(direct[1]))
    finally:
        gateway.stop()
    assert gateway.proc.poll() is not None


def test_every_stage_rule_names_a_module_that_exists() -> None:
    """A rule for a moved module matches nothing, and its stage's samples land in another row."""
    from bench import stages

    server = Path(__file__).resolve().parents[2] / "server" / "relay_server"
    relay_paths = {
        path
        for rules in (stages.NON_STREAM_RULES, stages.STREAM_RULES, stages.IO_RULES)
        for _, path, _ in rules
        if path.split("/")[0] in {"api", "pipeline", "providers", "text", "storage", "observability", "crypto"}
        or path == "logging_setup.py"
    }
    missing = sorted(p for p in relay_paths if not (server / p.rstrip("/")).exists())
    assert relay_paths and missing == [], missing


# -- before_after: interleaved runs of two builds ------------------------------------------------


def _payload(workers: float, rps: float, added: float | None = 1.0) -> dict[str, Any]:
    row = {
        "scenario": "chat", "concurrency": 32, "relay": {"rps": rps}, "added_p50_ms": added,
        "cpu_ms_per_request": {"envoy_plus_workers": workers + 0.4, "workers": workers, "envoy": 0.4, "redis": 0.1},
    }  # fmt: skip
    return {"rows": [row]}


def test_before_after_medians_each_builds_runs() -> None:
    runs: before_after.Runs = {}
    for base, this in ((1.30, 1.20), (1.10, 1.00), (1.50, 1.40)):  # drift moves both builds alike
        before_after.collect(runs, "base", _payload(base, 800))
        before_after.collect(runs, "this", _payload(this, 850, added=None))
    found = {c.metric: c for c in before_after.changes(runs)}
    workers = found["cpu ms/req workers"]
    assert (workers.scenario, workers.concurrency, workers.before, workers.after) == (
        "chat", 32, [1.30, 1.10, 1.50], [1.20, 1.00, 1.40],
    )  # fmt: skip
    assert workers.medians == (1.30, 1.20) and round(workers.percent or 0, 1) == -7.7
    assert round(found["rps"].percent or 0, 1) == 6.2
    assert "added p50 ms" not in found  # measured by one build only: nothing to compare
    assert "median 1.300 → 1.200 (-7.7 %)" in workers.line()


def test_before_after_ignores_rows_only_one_build_has() -> None:
    runs: before_after.Runs = {}
    before_after.collect(runs, "base", _payload(1.0, 800))
    before_after.collect(runs, "this", {"rows": [{**_payload(1.0, 800)["rows"][0], "scenario": "stream"}]})
    assert before_after.changes(runs) == []


def test_gc_timer_counts_collections_by_generation_until_stopped() -> None:
    import gc  # noqa: PLC0415

    from bench.inprocess import GcTimer  # noqa: PLC0415

    enabled = gc.isenabled()
    gc.disable()  # only the collections the test asks for
    try:
        timer = GcTimer()
        gc.collect(0)
        gc.collect(2)
        timer.stop()
        gc.collect(2)  # after stop: not counted
    finally:
        if enabled:
            gc.enable()
    assert timer.runs == [1, 0, 1]
    line = timer.per_request(2)
    assert line.startswith("GC: ") and "gen 0 1 runs" in line and "gen 2 1 runs" in line
