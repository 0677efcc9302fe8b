"""A whole Relay for end-to-end tests: server worker process(es) + Envoy, on random ports.

Postgres comes from the session's embedded cluster (one fresh database);
Redis, when a test needs it, from ``relay_server.stack.redis``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from relay_server.stack import envoy as envoy_stack
from relay_server.stack.processes import free_port, wait_until
from relay_server.storage.postgres.demo import seed_demo
from tests.support.pg import TestDatabase

REPO = Path(__file__).resolve().parents[2]
MAX_REQUEST_BYTES = 32 * 1024 * 1024


@dataclass
class RelayStack:
    base_url: str
    grpc_addr: str
    test_key: str
    admin_token: str
    db: TestDatabase
    http_port: int
    grpc_port: int
    admin_port: int
    workdir: Path
    redis_url: str = ""
    jwt_secret: str = ""
    dashboard_port: int = 0
    # Set when the node reaches Postgres through a pooler (PgBouncer) rather than directly.
    database_url: str = ""
    app_database_url: str = ""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def server_env(self, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url or self.db.owner_dsn,
            "RELAY_APP_DATABASE_URL": self.app_database_url or self.db.app_dsn,
            "RELAY_GRPC_PORT": str(self.grpc_port),
            "RELAY_ADMIN_TOKEN": self.admin_token,
            "REDIS_URL": self.redis_url,
            "RELAY_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "RELAY_LOG_LEVEL": "INFO",
            "RELAY_TRUSTED_PROXIES": "127.0.0.1,::1",  # Envoy's hop
            "RELAY_METRICS_PORT": "0",  # test stacks run side by side; tests that scrape /metrics set their own
            "RELAY_JWT_SECRET": self.jwt_secret,
            **extra,
        }

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()


def _grpc_serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_stack(
    db: TestDatabase, workdir: Path, *, redis_url: str, workers: int = 1, extra_env: dict[str, str] | None = None
) -> RelayStack:
    workdir.mkdir(parents=True, exist_ok=True)
    seeded = json.loads(seed_demo(db.owner_dsn))
    stack = RelayStack(
        base_url="",
        grpc_addr="",
        test_key=seeded["test_key"],
        admin_token=secrets.token_urlsafe(24),
        db=db,
        http_port=free_port(),
        grpc_port=free_port(),
        admin_port=free_port(),
        workdir=workdir,
        redis_url=redis_url,
        jwt_secret=secrets.token_urlsafe(32),
        dashboard_port=free_port(),
    )
    return start_node(stack, workers=workers, extra_env=extra_env)


def start_node(stack: RelayStack, *, workers: int = 1, extra_env: dict[str, str] | None = None) -> RelayStack:
    """Start one Relay node (server, web console, Envoy) as ``stack`` describes it; the database is
    seeded already.  A multi-node topology (tests/support/cluster.py) starts several on one database."""
    import os

    workdir = stack.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    stack.base_url = f"http://127.0.0.1:{stack.http_port}/v1"
    stack.grpc_addr = f"127.0.0.1:{stack.grpc_port}"
    try:
        server_log = (workdir / "server.log").open("ab")
        server = subprocess.Popen(
            [sys.executable, "-m", "relay_server", "serve", "--workers", str(workers)],
            env={**os.environ, **stack.server_env(**(extra_env or {}))},
            stdout=server_log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        stack._procs.append(server)
        wait_until(lambda: _grpc_serving(stack.grpc_addr), timeout=60, what="relay server", pid=server.pid,
                   log_path=workdir / "server.log")

        # The web console, served by Envoy at /dashboard (same origin as the API).
        dashboard_log = (workdir / "dashboard.log").open("ab")
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "relay_server", "dashboard", "serve"],
            env={**os.environ, **stack.server_env(**(extra_env or {})), "RELAY_GRPC_TARGET": stack.grpc_addr,
                 "RELAY_DASHBOARD_PORT": str(stack.dashboard_port)},
            stdout=dashboard_log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        stack._procs.append(dashboard)

        descriptor = REPO / "envoy" / "relay.pb"
        config = envoy_stack.render_envoy_config(
            http_port=stack.http_port,
            grpc_host="127.0.0.1",
            grpc_port=stack.grpc_port,
            admin_port=stack.admin_port,
            descriptor_path=descriptor,
            services=envoy_stack.http_services(descriptor),
            max_request_bytes=MAX_REQUEST_BYTES,
            access_log_path=workdir / "envoy-access.log",
            dashboard_port=stack.dashboard_port,
        )
        config_path = workdir / "envoy.yaml"
        config_path.write_text(config)
        envoy_log = (workdir / "envoy.log").open("ab")
        envoy = subprocess.Popen(envoy_stack.envoy_command(config_path), stdout=envoy_log, stderr=subprocess.STDOUT)
        stack._procs.append(envoy)
        wait_until(lambda: envoy_stack.envoy_ready(stack.admin_port), timeout=60, what="envoy", pid=envoy.pid,
                   log_path=workdir / "envoy.log")
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{stack.http_port}/dashboard/healthz"), timeout=60,
                   what="dashboard", pid=dashboard.pid, log_path=workdir / "dashboard.log")
    except BaseException:
        stack.stop()
        raise
    return stack
