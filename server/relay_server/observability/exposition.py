"""Serving ``/metrics`` on its own plain-HTTP port, and the multi-process plumbing.

One worker (``relay serve``): the worker serves its own registry.
``--workers N``: the supervisor makes a fresh ``PROMETHEUS_MULTIPROC_DIR``
under ``state_dir`` (one per supervisor, so two deployments sharing a state
directory never mix), starts every worker with it (and with its metrics port
off), serves the merged files, and marks a worker dead when it exits (its
``live*`` gauges disappear; its counters keep counting in the totals).

prometheus_client decides at import whether it writes mmap files (from the
environment variable), so the supervisor hands the directory to its workers
through their environment; nothing in Relay reads it back.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from relay_server.observability.process_metrics import add_supervisor_collectors
from relay_server.pids import pid_exists
from relay_server.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def is_multiprocess() -> bool:
    """Whether this process writes its metrics to mmap files (a supervised worker)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def merged_registry(path: Path | None = None) -> CollectorRegistry:
    """A registry that reads every process's files (``path`` None: the environment's directory)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path) if path is not None else None)
    return registry


class MetricsServer:
    """prometheus_client's WSGI server in a daemon thread: scrapes never touch the event loop."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @classmethod
    def start(cls, host: str, port: int, registry: CollectorRegistry) -> MetricsServer | None:
        """Serve, or log why not and return None: metrics never keep a server from serving traffic."""
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            log.error("metrics endpoint not started", extra={"metrics_host": host, "metrics_port": port, "error": repr(exc)})
            return None
        log.info("metrics endpoint serving", extra={"metrics_host": host, "metrics_port": port})
        return cls(httpd, thread)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class SupervisorMetrics:
    """The supervisor's side: the shared directory, the merged endpoint, dead workers."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.directory = (settings.state_dir / "metrics" / str(os.getpid())).resolve()
        self._server: MetricsServer | None = None

    @property
    def enabled(self) -> bool:
        return self._settings.metrics_port != 0

    def start(self, workers: Callable[[], Iterable[int]] = list) -> None:
        """Serve the workers' merged metrics, plus process_* of each process in ``workers()``."""
        if not self.enabled:
            return
        self._clean_stale()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        registry = merged_registry(self.directory)
        add_supervisor_collectors(registry, workers, os.getpid())
        self._server = MetricsServer.start(self._settings.metrics_host, self._settings.metrics_port, registry)

    def _clean_stale(self) -> None:
        """Remove the directories of supervisors that are gone."""
        parent = self.directory.parent
        if not parent.is_dir():
            return
        for entry in parent.iterdir():
            if entry.is_dir() and entry.name.isdigit() and not pid_exists(int(entry.name)):
                shutil.rmtree(entry, ignore_errors=True)

    def child_env(self) -> dict[str, str]:
        """What a worker's environment needs on top of the supervisor's."""
        if not self.enabled:
            return {}
        return {MULTIPROC_ENV: str(self.directory), "RELAY_METRICS_PORT": "0"}

    def worker_exited(self, pid: int) -> None:
        if self.enabled:
            mark_process_dead(pid, str(self.directory))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.enabled:
            shutil.rmtree(self.directory, ignore_errors=True)
