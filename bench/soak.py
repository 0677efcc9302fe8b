"""``--soak N``: drive N requests through Relay and watch worker memory.

The requests rotate over the scenarios in batches of ``every`` requests; after
each batch every worker's RSS is sampled.  Memory is called flat when, after
the first fifth of the run (imports, caches and pools settle), RSS grew by no
more than 5 MB or 5 %, whichever is larger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import procstats
from bench.loadgen import drive
from bench.scenarios import Mode, Scenario, spec_for
from bench.stack import BenchStack

BATCH_BOUND_S = 300.0  # no single batch runs longer than this, whatever happens


def run_soak(
    stack: BenchStack,
    scenarios: Sequence[Scenario],
    modes: dict[str, Mode],
    *,
    total: int,
    every: int,
    concurrency: int,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    if total < 1 or every < 1:
        raise ValueError("--soak and --soak-every must be positive")
    usable = [s for s in scenarios if modes[s.name].name != "broken"]
    if not usable:
        raise RuntimeError("no scenario works: nothing to soak")
    assert stack.server is not None
    workers = procstats.worker_pids(stack.server.pid)
    samples: list[dict[str, Any]] = []
    done = errors = batch = 0
    started = time.monotonic()
    echo(f"soak: {total} requests, RSS sampled every {every}, c={concurrency}, workers {workers}")
    while done < total:
        scenario = usable[batch % len(usable)]
        spec = spec_for(stack, scenario, relay=True, mode=modes[scenario.name])
        size = min(every, total - done)
        result = drive(spec, concurrency=concurrency, requests=size, duration_s=BATCH_BOUND_S)
        sent = result.ok + result.errors
        if sent == 0:
            raise RuntimeError(f"soak: a batch of {scenario.name} sent nothing ({result.first_error})")
        done += sent
        errors += result.errors
        batch += 1
        mem = procstats.memories(workers)
        samples.append({
            "requests": done,
            "scenario": scenario.name,
            "rss_mb": {str(p): round(m.rss_mb, 1) for p, m in mem.items()},
            "peak_rss_mb": {str(p): round(m.peak_rss_mb, 1) for p, m in mem.items()},
            "errors": result.errors,
        })  # fmt: skip
        echo(f"  {done:>8} requests  " + "  ".join(f"pid {p}: {m.rss_mb:6.1f} MB" for p, m in mem.items()))
        if not mem:
            raise RuntimeError("soak: the workers are gone")
    return _verdict(samples, errors, time.monotonic() - started)


def _verdict(samples: list[dict[str, Any]], errors: int, elapsed: float) -> dict[str, Any]:
    warm_at = samples[-1]["requests"] / 5
    warm = next((s for s in samples if s["requests"] > warm_at), samples[0])
    last = samples[-1]
    growth = {pid: round(last["rss_mb"].get(pid, 0) - warm["rss_mb"][pid], 1) for pid in warm["rss_mb"]}
    worst = max(growth.values(), default=0.0)
    worst_base = max(warm["rss_mb"].values(), default=0.0)
    return {
        "requests": last["requests"],
        "errors": errors,
        "elapsed_s": round(elapsed, 1),
        "warm_after_requests": warm["requests"],
        "growth_mb": worst,
        "flat": worst <= max(5.0, 0.05 * worst_base),
        "max_rss_mb": max((v for s in samples for v in s["rss_mb"].values()), default=0.0),
        "max_peak_rss_mb": max((v for s in samples for v in s["peak_rss_mb"].values()), default=0.0),
        "samples": samples,
    }
