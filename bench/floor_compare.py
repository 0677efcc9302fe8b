"""Where Relay's worker spends beyond the architecture's floor, sampled side by side.

The floor (``bench/floor_gateway.py``) is Relay's Envoy, grpc.aio and upstream client with no
pipeline.  This drives the same load (chat or stream, c=32) through Relay's worker and through
the floor's process in turn, samples each with py-spy, and splits each one's CPU per request
(measured from the process's own counters) into:

* **event loop + gRPC core**: samples whose innermost frame is the loop's run call — uvloop,
  grpc.aio's Cython and grpc core, with no Python of the gateway running;
* **Python**: samples inside the gateway's Python (with the C it calls: orjson, hiredis, and the
  socket writes it makes).

A line that writes to a socket (the Redis flush, grpc.aio's initial metadata, the upstream
request) collects samples while the process waits, runnable, for the peer it just woke on the
same cores: read those lines as latency on the loop, not as CPU.  (The bench's Redis over a Unix
socket instead of loopback TCP left the worker's measured CPU per request unchanged.)

The gRPC poller thread is left out of both (py-spy reports it busy while it waits, see
``bench/profile.py``); its CPU is in the measured total.

    PYTHONPATH=server:proto_python:. .venv/bin/python -m bench.floor_compare --scenario stream --seconds 8
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass

from bench import floor_gateway, procstats, scenarios
from bench import profile as spy
from bench.loadgen import RequestSpec, drive
from bench.stack import BenchStack, StackOptions, new_stack

# The loop's run call in each process: a sample whose innermost frame is this is in C.
_LOOP_LEAVES = (("_serve", "relay_server/cli.py"), ("main", "bench/floor_gateway.py"), ("Runner.run", "asyncio/runners.py"))


@dataclass
class Split:
    name: str
    requests: int
    cpu_us: float  # the process's CPU per request (all threads)
    loop: int  # samples in the event loop and gRPC core
    python: int  # samples in the gateway's Python
    top: Counter[str]

    def us(self, samples: int) -> float:
        busy = self.loop + self.python
        return self.cpu_us * samples / busy if busy else 0.0


def split(name: str, collapsed: str, requests: int, cpu_us: float) -> Split:
    loop = python = 0
    top: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in (spy._parse_frame(raw) for raw in stack.split(";")) if f is not None]  # noqa: SLF001
        if not frames or frames[0].func == "Thread._bootstrap":
            continue  # the gRPC poller and other threads
        leaf, count = frames[-1], int(count_text)
        if any(leaf.func == func and leaf.file.endswith(tail) for func, tail in _LOOP_LEAVES):
            loop += count
        else:
            python += count
            top[f"{leaf.func} ({leaf.where})"] += count
    return Split(name, requests, cpu_us, loop, python, top)


def measure(stack: BenchStack, name: str, spec: RequestSpec, pid: int, seconds: int) -> Split:
    drive(spec, concurrency=32, requests=2000, duration_s=1.0)  # warm
    out = stack.root / f"floor-compare-{name}.txt"
    sampler = spy.record(pid, seconds + 1, out, rate=997)
    time.sleep(0.5)  # py-spy attaches
    group = [procstats.Group(name, (pid,))]
    before = procstats.snapshot(group)
    result = scenarios.run_load(spec, concurrency=32, requests=10**9, duration_s=seconds, use_wrk=False)
    after = procstats.snapshot(group)
    sampler.wait(timeout=seconds + 30)
    cpu_s = procstats.cpu_delta_s(before, after).get(name, 0.0)
    return split(name, out.read_text() if out.exists() else "", result.ok, cpu_s * 1e6 / max(1, result.ok))


def render(rows: list[Split], per: str, top: int) -> str:
    lines = [f"| µs per {per} | " + " | ".join(r.name for r in rows) + " |", "|---|" + "---|" * len(rows)]
    lines.append("| process CPU (measured) | " + " | ".join(f"{r.cpu_us:.0f}" for r in rows) + " |")
    lines.append("| event loop + gRPC core | " + " | ".join(f"{r.us(r.loop):.0f}" for r in rows) + " |")
    lines.append("| the gateway's Python | " + " | ".join(f"{r.us(r.python):.0f}" for r in rows) + " |")
    for r in rows:
        lines.append(f"\n{r.name}: innermost Python frames, µs per {per}")
        lines += [f"  {r.us(n):7.1f}  {frame}" for frame, n in r.top.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor_compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=("chat", "stream"), default="stream")
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args(argv)
    if spy.find_py_spy() is None:
        p.error("py-spy is not installed: `.venv/bin/pip install py-spy`")
    stack = new_stack(StackOptions())
    try:
        stack.start()
        assert stack.server is not None
        floor = floor_gateway.start_floor(stack.mock_url, stack.root, 1)
        stack.on_stop(floor.stop)
        scenario = next(s for s in scenarios.SCENARIOS if s.name == args.scenario)
        mode = scenarios.detect_mode(stack, scenario)
        relay_spec = scenarios.spec_for(stack, scenario, relay=True, mode=mode)
        floor_spec = scenarios.spec_for(stack, scenario, relay=False, mode=None, peer=floor)
        rows = [
            measure(stack, "relay worker", relay_spec, procstats.worker_pids(stack.server.pid)[0], args.seconds),
            measure(stack, "floor process", floor_spec, floor.pid, args.seconds),
        ]
        print(render(rows, "stream" if scenario.stream else "request", args.top))
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
