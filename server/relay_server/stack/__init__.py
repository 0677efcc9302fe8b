"""The local stack behind ``make up`` / ``make down``.

Embedded Postgres and Redis (unless ``DATABASE_URL`` / ``REDIS_URL`` point
elsewhere), the gRPC server and Envoy, each started detached with a pid file
under ``.relay/``.  Entry point: ``python -m relay_server.stack up|down|status``.

Layout of the state directory (``RELAY_STATE_DIR``, default ``.relay``)::

    stack.env         URLs of the databases the stack started (0600)
    quickstart.env    RELAY_BASE_URL, RELAY_GRPC_ADDR, RELAY_TEST_KEY, RELAY_ADMIN_TOKEN (0600)
    envoy.yaml        the rendered, validated Envoy config
    pids/*.pid        one per process the stack started: "<pid> <start time>"
    logs/*.log        their stdout/stderr; logs/envoy-access.log is the JSON access log
    postgres/         embedded Postgres (pgdata/, superuser password; server log in pgdata/server.log)
    redis/            local Redis data directory
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its files (all under one state directory)."""

    root: Path

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def stack_env(self) -> Path:
        return self.root / "stack.env"

    @property
    def quickstart_env(self) -> Path:
        return self.root / "quickstart.env"

    @property
    def envoy_config(self) -> Path:
        return self.root / "envoy.yaml"

    @property
    def access_log(self) -> Path:
        return self.logs / "envoy-access.log"

    def pid(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def create(self) -> None:
        for directory in (self.root, self.pids, self.logs):
            directory.mkdir(parents=True, exist_ok=True)


def read_env_file(path: Path) -> dict[str, str]:
    """``[export ]KEY=value`` lines (shell-quoted values, ``#`` comments) as a dict."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.removeprefix("export ").partition("=")
        parsed = shlex.split(raw)
        values[key.strip()] = parsed[0] if parsed else ""
    return values


def write_env_file(path: Path, values: dict[str, str], *, header: str) -> None:
    """Write ``values`` as ``export`` lines, so that ``source path`` puts them in the
    environment of the programs the shell starts (a Python example reads ``os.environ``).

    The file holds secrets, so it is created 0600 and replaced atomically.
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover tmp file may have had other bits
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    tmp.replace(path)
