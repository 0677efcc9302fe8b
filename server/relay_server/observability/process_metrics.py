"""``process_*`` and ``python_*`` metrics, in both ways Relay runs.

One worker (``relay serve``): prometheus_client's own process, platform and
GC collectors on the worker's registry.

``--workers N``: the supervisor serves files merged from its workers, which
carry only Relay's metrics (prometheus_client's process collectors do not
write to the shared files).  The supervisor therefore reads every live
worker's ``/proc/<pid>`` itself and labels each sample with the process's
``pid`` and ``role`` (supervisor | worker), so CPU, memory and open files
of each worker are scraped from the one endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric


def add_runtime_collectors(registry: CollectorRegistry) -> None:
    """This process's process_*, python_info and python_gc_* metrics."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class ProcessesCollector:
    """process_* of the supervisor and each live worker, labelled by pid and role."""

    def __init__(self, workers: Callable[[], Iterable[int]], own_pid: int) -> None:
        self._workers = workers
        self._own = own_pid

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        pids = [(self._own, "supervisor"), *((pid, "worker") for pid in self._workers())]
        for pid, role in pids:
            # registry=None: a throw-away reader of /proc/<pid> (a vanished pid yields nothing).
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid), "role": role}, sample.value)
        yield from families.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def add_supervisor_collectors(registry: CollectorRegistry, workers: Callable[[], Iterable[int]], own_pid: int) -> None:
    registry.register(ProcessesCollector(workers, own_pid))
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
