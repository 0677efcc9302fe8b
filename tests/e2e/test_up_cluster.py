"""``make up-cluster`` then ``make down`` (the stack entry point they run), in a state directory of its own."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from relay_server.stack import read_env_file
from relay_server.stack.cluster_up import NODES
from relay_server.stack.pgbouncer import pgbouncer_available
from relay_server.stack.processes import pid_alive, port_open

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not pgbouncer_available(), reason="Debian's pgbouncer is not installed (make pgbouncer)"),
]


def _free_run(n: int) -> int:
    """A base port with the ``n`` ports from it free (the nodes take the ports after the front's).

    Below the kernel's ephemeral range: a port picked free there can be taken by any outgoing
    connection (the cluster's own, made while it starts) before the server binds it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(10_000, max(10_001, low - n - 1))
        if _taken.isdisjoint(range(base, base + n + 1)) and not any(port_open("127.0.0.1", base + i) for i in range(n + 1)):
            _taken.update(range(base, base + n + 1))
            return base
    raise AssertionError("no run of free ports")


_taken: set[int] = set()


def _stack(command: str, state: Path, ports: dict[str, int]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        RELAY_STATE_DIR=str(state), RELAY_HTTP_PORT=str(ports["http"]), RELAY_GRPC_PORT=str(ports["grpc"]),
        RELAY_ENVOY_ADMIN_PORT=str(ports["admin"]), RELAY_DASHBOARD_PORT=str(ports["dashboard"]),
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "relay_server.stack", command], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip


def test_up_cluster_serves_through_the_front_and_down_stops_everything() -> None:
    # Not pytest's tmp_path: its parents are root-only (0700), and the embedded Postgres runs as
    # an unprivileged user when the tests run as root (storage/postgres/embedded.py).
    state = Path(tempfile.mkdtemp(prefix="relay-up-cluster-"))
    ports = {name: _free_run(NODES) for name in ("http", "grpc", "admin")} | {"dashboard": _free_run(0)}
    pids: list[int] = []
    try:
        up = _stack("up-cluster", state, ports)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "3 masters + 3 replicas" in up.stdout and "balancing 2 nodes" in up.stdout
        quick = read_env_file(state / "quickstart.env")
        assert quick["RELAY_BASE_URL"] == f"http://127.0.0.1:{ports['http']}/v1"
        with httpx.Client(timeout=30, trust_env=False) as http:
            for _ in range(4):  # round robin: both nodes answer
                answer = http.post(
                    f"{quick['RELAY_BASE_URL']}/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {quick['RELAY_TEST_KEY']}"},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
        for i in range(NODES):
            assert (state / f"node{i}" / "logs" / "envoy-access.log").read_text().strip(), f"node {i} served nothing"
        pids = [int(p.read_text().split()[0]) for p in (state / "pids").glob("*.pid")]
        pids += [int(p.read_text().split()[0]) for i in range(NODES) for p in (state / f"node{i}" / "pids").glob("*.pid")]
        assert len(pids) >= 6 + 1 + 1 + 2 * NODES  # redis nodes, pgbouncer, front, each node's server and envoy
    finally:
        down = _stack("down", state, ports)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p for p in pids if pid_alive(p)], "make down left processes running"
    shutil.rmtree(state, ignore_errors=True)
