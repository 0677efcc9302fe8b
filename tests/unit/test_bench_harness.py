"""Checks of the bench's own parts (no timing asserts): the mock upstream over
real sockets, the HTTP client and drivers, and the parsers behind the report.

Run: ``PYTHONPATH=server:proto_python:sdk_python:. .venv/bin/pytest -q bench/test_bench.py``
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from bench import profile, report, soak, wrkdriver
from bench.http1 import Connection, Target, render_request
from bench.loadgen import RequestSpec, drive_async, percentile
from bench.mock_upstream import MockConfig, start
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
        "<module> (/x/server/relay_server/__main__.py:5);admit (/x/server/relay_server/pipeline/admission.py:200);"
        "pack_command (/v/lib/python3.11/site-packages/redis/asyncio/connection.py:1357) 6",
        "<module> (/x/server/relay_server/__main__.py:5);dumps (/v/lib/python3.11/site-packages/orjson/x.py:1) 2",
        "_bootstrap (/usr/lib/python3.11/threading.py:1002);run (/usr/lib/python3.11/threading.py:982) 5",
        "_bootstrap (/usr/lib/python3.11/threading.py:1002);Thread.run (/usr/lib/python3.11/threading.py:982) 4",
        "not a stack line",
    ])  # fmt: skip
    prof = profile.parse(text)
    assert prof.samples == 13 and prof.idle_skipped == 4
    assert prof.self_time.most_common(1)[0] == ("pack_command (redis/asyncio/connection.py:1357)", 6)
    assert prof.inclusive["admit (relay_server/pipeline/admission.py)"] == 6
    assert prof.areas["redis"] == 6 and prof.areas["orjson"] == 2
    assert "pack_command" in profile.render(prof)


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
    verdicts = report.targets([], [row, {**row, "workers": 1, "relay": {**row["relay"], "rps": 450.0}}], None)
    assert any("scales" in v["target"] for v in verdicts)
