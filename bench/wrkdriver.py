"""The wrk load driver (Debian's ``wrk``), for non-streaming scenarios.

wrk is far cheaper per request than any Python client, so the CPU the bench
attributes to Relay is not hidden behind a saturated driver.  The bench never
installs it: without ``wrk`` on PATH it says how to get it and the Python
driver (``bench/loadgen.py``) takes over.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from bench.http1 import Target
from bench.loadgen import LoadResult, RequestSpec

LUA = Path(__file__).resolve().parent / "wrk_post.lua"
INSTALL_HINT = "wrk is not on PATH: install it with `apt-get install -y wrk` (Debian); using the Python driver meanwhile."


def find_wrk() -> str | None:
    return shutil.which("wrk")


def run_wrk(spec: RequestSpec, *, concurrency: int, requests: int, duration_s: float, threads: int = 2) -> LoadResult:
    """One wrk run: stops after ``requests`` responses or ``duration_s``, whichever is first."""
    binary = find_wrk()
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    Target.parse(spec.url)  # loopback only
    threads = max(1, min(threads, concurrency))
    per_thread = math.ceil(requests / threads)
    with tempfile.TemporaryDirectory(prefix="relay-bench-wrk-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(spec.body)
        env = {
            **os.environ,
            "BENCH_BODY_FILE": str(body_file),
            # Passed in the environment, never in argv (visible in `ps`).
            "BENCH_AUTH": spec.headers.get("Authorization", ""),
            "BENCH_REQUESTS_PER_THREAD": str(per_thread),
            "BENCH_HEADERS": extra_headers(spec.headers),
        }
        argv = [
            binary, "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, math.ceil(duration_s))}s",
            "--timeout", "30s", "--latency", "-s", str(LUA), spec.url,
        ]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        done_threads = 0
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("BENCH_THREAD_DONE"):
                    done_threads += 1
                    if done_threads == threads:
                        proc.send_signal(signal.SIGINT)  # wrk summarises and exits
                if time.perf_counter() - started > duration_s + 60:
                    break
            proc.wait(timeout=max(5.0, duration_s + 60 - (time.perf_counter() - started)))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = proc.stderr.read() if proc.stderr else ""
    return _parse(lines, concurrency, stderr)


def extra_headers(headers: Mapping[str, str]) -> str:
    """Headers other than Content-Type and Authorization, as the Lua script reads them."""
    return "\n".join(f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("content-type", "authorization"))


def _parse(lines: list[str], concurrency: int, stderr: str) -> LoadResult:
    result = LoadResult("wrk", concurrency)
    summary = next((json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("BENCH_JSON ")), None)
    if summary is None:
        result.first_error = ("wrk printed no summary: " + stderr.strip() + "".join(lines[-5:]))[:500]
        return result
    errors = sum(summary[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    result.duration_s = summary["duration_us"] / 1e6
    result.ok = max(0, summary["requests"] - summary["err_status"])
    result.errors = errors
    result.statuses.update({"2xx/3xx": result.ok, "non_2xx": summary["err_status"]})
    for key in ("err_connect", "err_read", "err_write", "err_timeout"):
        if summary[key]:
            result.statuses[key] = summary[key]
    result.wrk_percentiles_ms = {
        "p50": summary["p50_us"] / 1000,
        "p90": summary["p90_us"] / 1000,
        "p99": summary["p99_us"] / 1000,
        "mean": summary["mean_us"] / 1000,
        "max": summary["max_us"] / 1000,
    }
    if summary["err_status"]:
        result.first_error = f"{summary['err_status']} non-2xx responses (wrk does not keep bodies)"
    return result
