"""The server as operators run it: `relay serve --workers N`, SIGTERM drains in-flight streams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
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


def _start(db: TestDatabase, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": db.owner_dsn, "RELAY_APP_DATABASE_URL": db.app_dsn, "RELAY_SHUTDOWN_GRACE_S": "10"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay_server", "serve", "--workers", str(workers), "--port", str(port)],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
    )
    wait_until(lambda: _grpc_serving(f"127.0.0.1:{port}"), timeout=60, what="server", pid=proc.pid, log_path=log)
    return proc


def _chat(port: int, key: str, **metadata: str):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    request = chat_pb2.ChatCompletionRequest(
        model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))]
    )
    return channel, stub.StreamChatCompletion(request, metadata=(("authorization", f"Bearer {key}"), *metadata.items()))


def test_workers_share_the_port_and_a_dead_worker_is_replaced(pg_db: TestDatabase, tmp_path: Path) -> None:
    key = json.loads(seed_demo(pg_db.owner_dsn))["test_key"]
    port = free_port()
    supervisor = _start(pg_db, port, 2, tmp_path / "server.log")
    all_workers: set[int] = set()
    try:
        parent = psutil.Process(supervisor.pid)
        def listening() -> list[psutil.Process]:
            return [w for w in parent.children() if any(c.laddr.port == port for c in w.net_connections(kind="tcp"))]

        # Both workers bind the shared port (each starts on its own schedule).
        wait_until(lambda: len(listening()) == 2, timeout=60, what="two workers bound to the port")
        workers = parent.children()
        for _ in range(5):
            channel, stream = _chat(port, key)
            assert list(stream)
            channel.close()
        workers[0].kill()
        wait_until(
            lambda: len(parent.children()) == 2 and workers[0].pid not in {c.pid for c in parent.children()},
            timeout=30, what="replacement worker",
        )
        wait_until(lambda: _grpc_serving(f"127.0.0.1:{port}"), timeout=30, what="serving again")
        all_workers = {w.pid for w in parent.children()}
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    assert all_workers and not any(psutil.pid_exists(pid) for pid in all_workers), "SIGTERM stops every worker"


def test_sigterm_lets_an_in_flight_stream_finish(pg_db: TestDatabase, tmp_path: Path) -> None:
    key = json.loads(seed_demo(pg_db.owner_dsn))["test_key"]
    port = free_port()
    server = _start(pg_db, port, 1, tmp_path / "server.log")
    channel, stream = _chat(port, key, **{"x-relay-test-latency-ms": "40"})
    received: list = []
    errors: list = []

    def consume() -> None:
        try:
            received.extend(stream)
        except grpc.RpcError as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.3)  # the stream is under way (40 ms per chunk)
    server.send_signal(signal.SIGTERM)
    reader.join(30)
    channel.close()
    assert not errors, errors
    assert received and received[-1].choices[0].finish_reason == "stop"
    assert server.wait(30) == 0
    assert not _grpc_serving(f"127.0.0.1:{port}")
