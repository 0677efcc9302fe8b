"""``relay serve --workers N``: N worker processes sharing one gRPC port.

Each worker is a separate interpreter (``relay serve --workers 1``) bound with
SO_REUSEPORT, so the kernel spreads connections across them.  The supervisor
forwards SIGTERM/SIGINT, restarts a worker that dies unexpectedly (with a
back-off), and exits once every worker has stopped after a shutdown signal.
It also serves the workers' merged Prometheus metrics (observability/exposition.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from relay_server.observability.exposition import SupervisorMetrics
from relay_server.settings import Settings

log = logging.getLogger(__name__)


def supervise(workers: int, argv_tail: list[str], settings: Settings | None = None) -> int:
    command = [sys.executable, "-m", "relay_server", "serve", "--workers", "1", *argv_tail]
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False
    metrics = SupervisorMetrics(settings or Settings.from_env())
    # returncode, not poll(): the metrics thread must not reap children under the main loop.
    metrics.start(lambda: [p.pid for p in list(procs.values()) if p.returncode is None])
    # Workers inherit this environment, plus the shared metrics directory (their own /metrics off).
    env = {**os.environ, **metrics.child_env()} if metrics.enabled else None

    def start(slot: int) -> None:
        procs[slot] = subprocess.Popen(command, env=env)
        log.info("worker started", extra={"slot": slot, "pid": procs[slot].pid})

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(workers):
        start(slot)
    backoff = dict.fromkeys(procs, 0.5)
    while True:
        time.sleep(0.2)
        alive = 0
        for slot, proc in list(procs.items()):
            if proc.poll() is None:
                alive += 1
            elif not stopping:
                log.warning("worker exited; restarting", extra={"slot": slot, "code": proc.returncode})
                metrics.worker_exited(proc.pid)
                time.sleep(backoff[slot])
                backoff[slot] = min(backoff[slot] * 2, 10.0)
                if stopping:  # the shutdown signal came during the back-off: a worker started now would never get it
                    continue
                start(slot)
                alive += 1
        if stopping and alive == 0:
            metrics.stop()
            return 0
