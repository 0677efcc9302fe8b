"""The bench's own Relay: embedded Postgres + Redis + mock upstream + N server
workers + Envoy, in a temporary directory, on free loopback ports.

Built from the same functions as ``make up`` (``relay_server.stack``), but
every process is a child of the bench and ``stop()`` ends exactly those, so
nothing outlives a run and a running ``make up`` stack is never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import seed as bench_seed
from relay_server.settings import Settings
from relay_server.stack import StackPaths, processes
from relay_server.stack import envoy as stack_envoy
from relay_server.stack import redis as stack_redis
from relay_server.stack.up import (
    DESCRIPTOR,
    REPO,
    ensure_postgres,
    grpc_serving,
    stop_postgres,
)

MOCK = Path(__file__).resolve().parent / "mock_upstream.py"
MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Relay settings the bench's environment must not leak into the server.
_SCRUB_PREFIXES = ("RELAY_",)
_SCRUB_NAMES = ("DATABASE_URL", "REDIS_URL")


@dataclass(frozen=True)
class StackOptions:
    workers: int = 1
    envoy_concurrency: int = 2
    log_level: str = "INFO"
    chunks: int = 20
    chunk_interval_ms: float = 5.0
    upstream_latency_ms: float = 0.0
    keep_dir: bool = False


@dataclass
class BenchStack:
    options: StackOptions
    root: Path
    http_port: int = 0
    grpc_port: int = 0
    admin_port: int = 0
    mock_port: int = 0
    owner_dsn: str = field(default="", repr=False)
    app_dsn: str = field(default="", repr=False)
    redis_url: str = ""
    master_key: str = field(default="", repr=False)
    seeded: bench_seed.Seeded | None = None
    redis: stack_redis.RedisHandle | None = None
    server: subprocess.Popen[bytes] | None = None
    envoy: subprocess.Popen[bytes] | None = None
    mock: subprocess.Popen[str] | None = None
    postgres_pid: int | None = None
    log: list[str] = field(default_factory=list)
    # Stopped first by stop(): processes the run added beside the stack (a peer gateway).
    extra_stops: list[Callable[[], object]] = field(default_factory=list)

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.root)

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"

    @property
    def mock_url(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}/v1"

    # -- start --------------------------------------------------------------

    def start(self, echo: Callable[[str], object] = print) -> None:
        paths = self.paths
        paths.create()
        started = time.monotonic()
        stack_env: dict[str, str] = {}
        # The embedded server, the `relay` database and every migration, as `make up` does.
        self.owner_dsn, self.app_dsn = ensure_postgres(Settings(state_dir=self.root), paths, stack_env, self.log.append)
        self.postgres_pid = processes.read_pid(paths.pid("postgres"))
        self.redis = stack_redis.start_redis(paths.redis_dir, processes.free_port(), log_path=paths.log("redis"))
        self.redis_url = self.redis.url
        self._start_mock()
        self.master_key = bench_seed.new_master_key()
        self.seeded = bench_seed.seed(self.owner_dsn, self.mock_url, self.master_key)
        self.grpc_port, self.http_port, self.admin_port = (processes.free_port() for _ in range(3))
        self.start_server(self.options.workers)
        self._start_envoy()
        echo(
            f"stack up in {time.monotonic() - started:.1f}s: postgres, redis, mock :{self.mock_port}, "
            f"{self.options.workers} worker(s) :{self.grpc_port}, envoy :{self.http_port}  ({self.root})"
        )

    def _start_mock(self) -> None:
        argv = [
            sys.executable, str(MOCK), "--port", "0",
            "--chunks", str(self.options.chunks),
            "--chunk-interval-ms", str(self.options.chunk_interval_ms),
            "--latency-ms", str(self.options.upstream_latency_ms),
        ]  # fmt: skip
        self.mock = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        assert self.mock.stdout is not None
        line = self.mock.stdout.readline().strip()  # "READY <port>", or "" if it died
        if not line.startswith("READY "):
            raise processes.ProcessError(f"mock upstream did not start: {line!r}")
        self.mock_port = int(line.split()[1])

    def server_env(self, workers: int) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB_NAMES and k != "PYTHONPATH"
        }
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO / "proto_python")]),
            DATABASE_URL=self.owner_dsn,
            RELAY_APP_DATABASE_URL=self.app_dsn,
            REDIS_URL=self.redis_url,
            RELAY_GRPC_HOST="127.0.0.1",
            RELAY_GRPC_PORT=str(self.grpc_port),
            RELAY_ADMIN_TOKEN=secrets.token_urlsafe(24),
            RELAY_MASTER_KEY=self.master_key,
            RELAY_STATE_DIR=str(self.root),
            RELAY_WORKERS=str(workers),
            RELAY_LOG_LEVEL=self.options.log_level,
            RELAY_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
        )
        return env

    def start_server(self, workers: int) -> None:
        """(Re)start ``relay serve --workers N``; returns once gRPC health is SERVING."""
        self.stop_server()
        log_file = self.paths.log("server").open("ab")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "relay_server", "serve", "--workers", str(workers)],
            env=self.server_env(workers),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log_file.close()
        address = f"127.0.0.1:{self.grpc_port}"
        processes.wait_until(lambda: grpc_serving(address), timeout=90, what="relay server",
                             pid=self.server.pid, log_path=self.paths.log("server"))  # fmt: skip
        if workers > 1:
            # Health answers once any worker is up; wait until all of them are.
            from bench.procstats import worker_pids

            processes.wait_until(lambda: len(worker_pids(self.server.pid)) >= workers, timeout=60,  # type: ignore[union-attr]
                                 what=f"{workers} workers", pid=self.server.pid)  # fmt: skip
            time.sleep(1.0)  # the last worker binds its port a moment after it forks

    def stop_server(self) -> None:
        if self.server is not None:
            _terminate(self.server, timeout=20)
            self.server = None

    def _start_envoy(self) -> None:
        config = stack_envoy.render_envoy_config(
            http_port=self.http_port,
            grpc_host="127.0.0.1",
            grpc_port=self.grpc_port,
            admin_port=self.admin_port,
            descriptor_path=DESCRIPTOR,
            services=stack_envoy.http_services(DESCRIPTOR),
            max_request_bytes=MAX_REQUEST_BYTES,
            access_log_path=self.paths.access_log,
        )
        stack_envoy.validate_envoy_config(config)
        self.paths.envoy_config.write_text(config)
        log_file = self.paths.log("envoy").open("ab")
        argv = stack_envoy.envoy_command(self.paths.envoy_config, concurrency=self.options.envoy_concurrency)
        self.envoy = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.root)
        log_file.close()
        processes.wait_until(
            lambda: stack_envoy.envoy_ready(self.admin_port) and processes.port_open("127.0.0.1", self.http_port),
            timeout=30, what="envoy", pid=self.envoy.pid, log_path=self.paths.log("envoy"),
        )  # fmt: skip

    # -- stop ---------------------------------------------------------------

    def on_stop(self, step: Callable[[], object]) -> None:
        self.extra_stops.append(step)

    def stop(self) -> None:
        """Stop everything this stack started (each step even if one fails)."""
        steps: list[Callable[[], object]] = [
            *self.extra_stops,
            lambda: _terminate(self.envoy),
            self.stop_server,
            lambda: _terminate(self.mock),
            lambda: self.redis.stop() if self.redis is not None else None,
            lambda: stop_postgres(self.paths),
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"bench: stop step failed: {exc!r}", file=sys.stderr)
        if not self.options.keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)


def _terminate(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def new_stack(options: StackOptions) -> BenchStack:
    root = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    return BenchStack(options=options, root=root)
