"""/metrics of `relay serve --workers 2`: one endpoint on the supervisor, counters summed across
worker processes (a dead worker's counts kept, its live gauges dropped), workers not serving it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import psutil
from google.protobuf import struct_pb2

from relay_proto.relay.v1 import chat_pb2, inference_service_pb2_grpc
from relay_server.stack.processes import free_port, wait_until
from relay_server.storage.postgres.demo import seed_demo
from tests.support.pg import TestDatabase
from tests.support.stack import _grpc_serving

REPO = Path(__file__).resolve().parents[2]
SUCCESS = re.compile(r'^relay_requests_total\{[^}]*status="success"[^}]*\} (\S+)$', re.M)


def _chat(port: int, key: str) -> None:
    # A new channel per call: new connections, which SO_REUSEPORT spreads over the workers.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        request = chat_pb2.ChatCompletionRequest(
            model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))]
        )
        stub.CreateChatCompletion(request, metadata=(("authorization", f"Bearer {key}"),), timeout=30)


def _scrape(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        return response.read().decode()


def _successes(metrics_port: int) -> float:
    return sum(float(v) for v in SUCCESS.findall(_scrape(metrics_port)))


def test_metrics_are_aggregated_across_workers(pg_db: TestDatabase, tmp_path: Path) -> None:
    key = json.loads(seed_demo(pg_db.owner_dsn))["test_key"]
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ, "DATABASE_URL": pg_db.owner_dsn, "RELAY_APP_DATABASE_URL": pg_db.app_dsn,
        "RELAY_METRICS_PORT": str(metrics_port), "RELAY_METRICS_SAMPLE_S": "0.2", "RELAY_STATE_DIR": str(tmp_path / "state"),
    }  # fmt: skip
    log = tmp_path / "server.log"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "relay_server", "serve", "--workers", "2", "--port", str(port)],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    directory = tmp_path / "state" / "metrics" / str(supervisor.pid)
    try:
        parent = psutil.Process(supervisor.pid)
        wait_until(lambda: _grpc_serving(f"127.0.0.1:{port}"), timeout=60, what="server", pid=supervisor.pid, log_path=log)
        wait_until(lambda: len(parent.children()) == 2, timeout=30, what="two workers")
        workers = parent.children()
        listening = {c.laddr.port for w in workers for c in w.net_connections(kind="tcp") if c.status == "LISTEN"}
        assert metrics_port not in listening, "workers leave /metrics to the supervisor"

        for _ in range(4):
            _chat(port, key)
        # Requests may be metered just after their response: wait for the count, never for a time.
        wait_until(lambda: _successes(metrics_port) == 4, timeout=10, what="4 successes counted")
        victim = workers[0].pid
        wait_until(lambda: (directory / f"gauge_livesum_{victim}.db").exists(), timeout=30, what="the victim's sampled gauges")
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(parent.children()) == 2 and victim not in {c.pid for c in parent.children()},
            timeout=30, what="replacement worker",
        )  # fmt: skip
        wait_until(lambda: _grpc_serving(f"127.0.0.1:{port}"), timeout=30, what="serving again")
        for _ in range(3):
            _chat(port, key)
        # The killed worker's requests still count; its live gauges are gone.
        wait_until(lambda: _successes(metrics_port) == 7, timeout=10, what="7 successes counted")
        assert _successes(metrics_port) == 7
        assert not (directory / f"gauge_livesum_{victim}.db").exists()
        text = _scrape(metrics_port)
        assert "relay_request_log_queue_depth" in text and "relay_provider_attempts_total" in text
        # process_* for the supervisor and every live worker (by pid), and the Python runtime.
        live = {str(c.pid) for c in parent.children()}
        rss = dict(re.findall(r'^process_resident_memory_bytes\{pid="(\d+)",role="(\w+)"\} \S+$', text, re.M))
        assert rss == {str(supervisor.pid): "supervisor", **dict.fromkeys(live, "worker")}
        assert re.search(r'^process_cpu_seconds_total\{pid="\d+",role="worker"\} ', text, re.M)
        assert "python_info{" in text and "python_gc_collections_total{" in text
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    assert not directory.exists(), "the supervisor removes its metrics directory on exit"
