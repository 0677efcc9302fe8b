"""The web console under `make up`: one loopback aiohttp process, reached through Envoy at /dashboard."""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from relay_server.stack import StackPaths, processes

Echo = Callable[[str], None]


def healthy(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/dashboard/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_dashboard(
    paths: StackPaths, env: dict[str, str], *, port: int, pythonpath: list[Path], cwd: Path, echo: Echo
) -> None:
    """Start the console (or restart it when its settings changed); Envoy proves it reachable later."""
    argv = [sys.executable, "-m", "relay_server", "dashboard", "serve"]
    launch = hashlib.sha256(json.dumps([argv, sorted(env.items())]).encode()).hexdigest()
    launch_file = paths.root / "dashboard.launch"
    pid = processes.read_pid(paths.pid("dashboard"))
    if pid is not None and (not launch_file.exists() or launch_file.read_text() != launch):
        processes.stop(paths.pid("dashboard"))
        echo(f"dashboard stopped  pid {pid} (settings changed)")
        pid = None
    if pid is None:
        if processes.port_open("127.0.0.1", port):
            raise processes.ProcessError(f"port {port} is busy: set RELAY_DASHBOARD_PORT to a free port")
        pid = processes.spawn_detached(
            argv, log_path=paths.log("dashboard"), pid_path=paths.pid("dashboard"),
            env=processes.child_env(env, pythonpath=pythonpath), cwd=cwd,
        )  # fmt: skip
        launch_file.write_text(launch)
        echo(f"dashboard started  pid {pid} on 127.0.0.1:{port}")
    else:
        echo(f"dashboard running  pid {pid}")
    processes.wait_until(lambda: processes.port_open("127.0.0.1", port), timeout=30, what="dashboard",
                         pid=pid, log_path=paths.log("dashboard"))  # fmt: skip
