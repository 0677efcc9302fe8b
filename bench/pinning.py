"""Core pinning for the scaling rows: the load driver away from the workers.

Unpinned, a second worker on a small machine competes with the load driver,
Envoy, Redis and the mock for the same cores, and the scaling figure measures
that contention.  Pinned, the workers get cores of their own and everything
else (the bench process and its children — wrk, the Python driver — Envoy,
Redis, Postgres, the mock) shares the rest; the console and the JSON say how
the cores were split.

Affinity is per thread on Linux, so every thread of a process is pinned
(``/proc/PID/task``); threads started later inherit their creator's mask.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Split:
    driver: tuple[int, ...]  # the bench, wrk, Envoy, Redis, Postgres, the mock
    workers: tuple[int, ...]

    def describe(self) -> str:
        return (f"workers on core(s) {','.join(map(str, self.workers))}; load driver, Envoy, Redis, Postgres and "
                f"the mock on core(s) {','.join(map(str, self.driver))}")  # fmt: skip


def split(cores: Sequence[int], driver_cores: int = 1) -> Split | None:
    """The first ``driver_cores`` cores for the driver side, the rest for the
    workers; None when that leaves the workers nothing."""
    ordered = tuple(sorted(set(cores)))
    if driver_cores < 1 or len(ordered) <= driver_cores:
        return None
    return Split(ordered[:driver_cores], ordered[driver_cores:])


def threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def pin(pids: Iterable[int], cores: Iterable[int]) -> int:
    """Pin every thread of each process; returns how many threads were pinned."""
    mask = set(cores)
    done = 0
    for pid in pids:
        for tid in threads(pid) or [pid]:
            try:
                os.sched_setaffinity(tid, mask)
                done += 1
            except OSError:  # a thread that ended meanwhile
                continue
    return done


def allowed(pid: int) -> set[int]:
    try:
        return set(os.sched_getaffinity(pid))
    except OSError:
        return set()


def online_cores() -> list[int]:
    text = Path("/sys/devices/system/cpu/online").read_text().strip() if Path("/sys/devices/system/cpu/online").exists() else ""
    cores: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cores.extend(range(int(lo), int(hi or lo) + 1))
    return cores or sorted(os.sched_getaffinity(0))
