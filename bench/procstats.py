"""CPU time and memory of the stack's processes, by group.

A group is a set of root pids plus, optionally, all their descendants (the
server's supervisor and its workers; the postmaster and its backends).  CPU is
user + system time of each process (threads included, children's reaped time
excluded so nothing is counted twice), diffed between two snapshots: a process
born in between counts from zero, one that died in between is lost (the stack's
processes are long-lived: pools and workers, not per-request forks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Group:
    name: str
    roots: tuple[int, ...]
    descendants: bool = False

    def pids(self) -> list[int]:
        found: list[int] = []
        for pid in self.roots:
            try:
                proc = psutil.Process(pid)
                found.append(pid)
                if self.descendants:
                    found.extend(child.pid for child in proc.children(recursive=True))
            except psutil.Error:
                continue
        return found


@dataclass
class Snapshot:
    cpu_s: dict[str, dict[int, float]] = field(default_factory=dict)


def _cpu(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def snapshot(groups: Iterable[Group]) -> Snapshot:
    snap = Snapshot()
    for group in groups:
        per_pid: dict[int, float] = {}
        for pid in group.pids():
            cpu = _cpu(pid)
            if cpu is not None:
                per_pid[pid] = cpu
        snap.cpu_s[group.name] = per_pid
    return snap


def cpu_delta_s(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots."""
    out: dict[str, float] = {}
    for name, now in after.cpu_s.items():
        then = before.cpu_s.get(name, {})
        out[name] = sum(max(0.0, cpu - then.get(pid, 0.0)) for pid, cpu in now.items())
    return out


def per_pid_delta_s(before: Snapshot, after: Snapshot, group: str) -> dict[int, float]:
    """CPU seconds of each process of one group between two snapshots."""
    then = before.cpu_s.get(group, {})
    return {pid: max(0.0, cpu - then.get(pid, 0.0)) for pid, cpu in after.cpu_s.get(group, {}).items()}


def worker_pids(server_pid: int) -> list[int]:
    """The processes that serve requests: the supervisor's children, or the server itself."""
    try:
        proc = psutil.Process(server_pid)
        children = [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []
    return children or [server_pid]


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    peak_rss_mb: float  # VmHWM: the high-water mark since the process started


def memory(pid: int) -> Memory | None:
    try:
        rss = psutil.Process(pid).memory_info().rss
        status = Path(f"/proc/{pid}/status").read_text()
    except (psutil.Error, OSError):
        return None
    hwm_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return Memory(rss / 2**20, hwm_kb / 1024)


def memories(pids: Iterable[int]) -> Mapping[int, Memory]:
    return {pid: m for pid in pids if (m := memory(pid)) is not None}


@dataclass(frozen=True)
class MachineSample:
    busy_s: float  # non-idle time of every CPU
    bench_s: float  # this process plus its reaped children (wrk, py-spy)


def machine_sample() -> MachineSample:
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + sum(getattr(t, f, 0.0) for f in ("irq", "softirq", "steal"))
    me = psutil.Process().cpu_times()
    return MachineSample(busy, me.user + me.system + me.children_user + me.children_system)


def foreign_s(before: MachineSample, after: MachineSample, stack_s: float) -> float:
    """CPU seconds used between two samples by processes that are neither the
    stack's nor the bench's (other jobs on the machine; kernel work not charged
    to a process, such as some loopback networking, also lands here)."""
    return (after.busy_s - before.busy_s) - (after.bench_s - before.bench_s) - stack_s
