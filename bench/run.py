"""Relay's performance harness (``make bench``): prints one table, writes JSON.

Starts its own stack in a temporary directory (embedded Postgres, Redis, a
mock OpenAI upstream, N workers, Envoy; free loopback ports), seeds a tenant
with a live key whose provider is the mock, and measures each scenario
(non-streaming chat, streaming chat, embeddings) at each concurrency twice:
straight against the mock ("direct") and through Relay (Envoy, REST).  When a
live-key request does not make it to the mock yet, that scenario falls back
to a test key (in-process deterministic provider) and the table says so.

Every run is bounded by ``--duration`` and ``--requests``; everything stops by
itself and the stack is torn down at the end.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
# Run as a script (`python bench/run.py`): make `bench` and the server importable.
for _p in (_REPO / "proto_python", _REPO / "sdk_python", _REPO / "server", _REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench import profile as bench_profile  # noqa: E402
from bench import redis_trace, report, scenarios  # noqa: E402
from bench.loadgen import drive  # noqa: E402
from bench.procstats import worker_pids  # noqa: E402
from bench.soak import run_soak  # noqa: E402
from bench.stack import BenchStack, StackOptions, new_stack  # noqa: E402
from bench.wrkdriver import INSTALL_HINT, find_wrk, run_wrk  # noqa: E402

RESULTS = _REPO / "bench" / "results"


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    p.add_argument("--requests", type=int, default=1_000_000, help="at most this many requests per measurement")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1, as `make up`)")
    p.add_argument("--concurrency", type=_int_list, default=[1, 32], help="comma-separated (default 1,32)")
    p.add_argument("--scenarios", default="chat,stream,embeddings", help="subset of chat,stream,embeddings")
    p.add_argument("--scale", type=_int_list, default=list(range(1, cores + 1)) if cores > 1 else [],
                   help=f"worker counts for the scaling rows (default 1..{cores}); --no-scale to skip")  # fmt: skip
    p.add_argument("--no-scale", action="store_true")
    p.add_argument("--driver", choices=["auto", "wrk", "python"], default="auto", help="non-streaming load driver")
    p.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                   help="also sample one worker with py-spy under non-streaming chat at c=32")  # fmt: skip
    p.add_argument("--profile-native", action="store_true", help="py-spy --native: include C frames")
    p.add_argument("--soak", type=int, default=0, metavar="N", help="soak mode: drive N requests, watch worker RSS")
    p.add_argument("--soak-every", type=int, default=0, metavar="X", help="sample RSS every X requests (default N/20)")
    p.add_argument("--soak-concurrency", type=int, default=32)
    p.add_argument("--log-level", default="INFO", help="the workers' RELAY_LOG_LEVEL (default INFO, as `make up`)")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per mock stream")
    p.add_argument("--chunk-interval-ms", type=float, default=5.0)
    p.add_argument("--upstream-latency-ms", type=float, default=0.0, help="mock delay before every answer")
    p.add_argument("--envoy-concurrency", type=int, default=min(2, cores))
    p.add_argument("--keep", action="store_true", help="keep the stack's temporary directory (logs)")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(scenarios.BY_NAME)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.duration <= 0 or args.requests < 1 or args.workers < 1 or args.chunks < 1:
        p.error("--duration, --requests, --workers and --chunks must be positive")
    if args.profile < 0 or args.soak < 0 or args.soak_every < 0 or args.soak_concurrency < 1:
        p.error("--profile, --soak and --soak-every must not be negative; --soak-concurrency must be positive")
    if not 1 <= args.envoy_concurrency <= 64:
        p.error("--envoy-concurrency must be 1..64")
    if args.driver == "wrk" and not find_wrk():
        p.error(INSTALL_HINT)
    return args


def _on_sigterm(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwind through `finally`: the stack is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    use_wrk = args.driver != "python" and find_wrk() is not None
    if args.driver == "auto" and not use_wrk:
        print(INSTALL_HINT)
    chosen = [scenarios.BY_NAME[n] for n in args.scenarios.split(",")]
    options = StackOptions(
        workers=args.workers, envoy_concurrency=args.envoy_concurrency, log_level=args.log_level,
        chunks=args.chunks, chunk_interval_ms=args.chunk_interval_ms,
        upstream_latency_ms=args.upstream_latency_ms, keep_dir=args.keep,
    )  # fmt: skip
    stack = new_stack(options)
    try:
        stack.start()
        modes = {s.name: scenarios.detect_mode(stack, s) for s in chosen}
        for name, mode in modes.items():
            print(f"mode {name:10} {mode.name:6} {mode.detail}")
        if args.soak:
            return _soak(stack, chosen, modes, args)
        return _bench(stack, chosen, modes, args, use_wrk)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable line; logs stay with --keep
        print(f"bench: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not args.keep:
            print("bench: rerun with --keep to keep the stack's logs", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if args.keep:
            print(f"kept {stack.root}")


def _bench(stack: BenchStack, chosen: list[scenarios.Scenario], modes: dict[str, scenarios.Mode],
           args: argparse.Namespace, use_wrk: bool) -> int:  # fmt: skip
    rows: list[report.Row] = []
    broken = scenarios.Mode("broken", "")
    baseline = scenarios.idle_baseline(stack)
    print("idle CPU ms/s (subtracted from every run): " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in baseline.items()))
    bounds = {"requests": args.requests, "duration_s": args.duration, "use_wrk": use_wrk, "baseline": baseline}
    for scenario in chosen:
        mode = modes[scenario.name]
        if mode.name == "broken":
            print(f"skip {scenario.name}: {mode.detail}", file=sys.stderr)
            continue
        trace = redis_trace.trace(stack.redis_url, scenarios.spec_for(stack, scenario, relay=True, mode=mode))
        print(f"redis {scenario.name:10} per request: {_trace_line(trace)}")
        for c in args.concurrency:
            print(f"run  {scenario.name:10} c={c:<3} direct ...", flush=True)
            direct = scenarios.measure(stack, scenario, relay=False, mode=None, concurrency=c, **bounds)
            print(f"run  {scenario.name:10} c={c:<3} relay ({mode.name}) ...", flush=True)
            relay = scenarios.measure(stack, scenario, relay=True, mode=mode, concurrency=c, **bounds)
            rows.append(report.make_row(scenario.name, args.workers, c, mode, relay, direct, trace))
    profile_json = (
        _profile(stack, modes, args, use_wrk) if args.profile and modes.get("chat", broken).name != "broken" else None
    )
    scaling = _scaling(stack, modes, args, use_wrk, bounds) if "chat" in modes else []
    verdicts = report.targets(rows, scaling, None)
    print()
    print(report.table([*rows, *scaling]))
    print("\ntargets:")
    print(report.verdict_lines(verdicts))
    notes = _notes(stack, modes, use_wrk)
    for note in notes:
        print(f"note: {note}")
    payload = {
        **_meta(stack, args, use_wrk),
        "modes": {k: {"mode": m.name, "detail": m.detail} for k, m in modes.items()},
        "idle_cpu_ms_per_s": {k: round(v * 1000, 2) for k, v in baseline.items()},
        "rows": rows,
        "scaling": scaling,
        "targets": verdicts,
        "profile": profile_json,
        "notes": notes,
    }
    report.write_json(args.output, payload)
    print(f"\nwrote {args.output}")
    return 0


def _trace_line(trace: dict[str, Any]) -> str:
    if "error" in trace:
        return f"MONITOR failed: {trace['error']}"
    top = ", ".join(f"{k} {v:g}" for k, v in list(trace["client_commands"].items())[:8])
    return (f"{trace['client_commands_per_request']:g} commands sent ({top}) "
            f"+ {trace['lua_commands_per_request']:g} run inside Lua scripts")  # fmt: skip


def _scaling(stack: BenchStack, modes: dict[str, scenarios.Mode], args: argparse.Namespace, use_wrk: bool,
             bounds: dict[str, Any]) -> list[report.Row]:  # fmt: skip
    counts = [] if args.no_scale else sorted(set(args.scale))
    if len(counts) < 2 or modes["chat"].name == "broken":
        return []
    rows = []
    c = max(args.concurrency)
    for workers in counts:
        print(f"run  scaling    workers={workers} c={c} relay ...", flush=True)
        stack.start_server(workers)
        fresh = {**bounds, "baseline": scenarios.idle_baseline(stack, 2.0)}  # idle cost grows with workers
        m = scenarios.measure(stack, scenarios.BY_NAME["chat"], relay=True, mode=modes["chat"], concurrency=c,
                              warmup_s=2.0, **fresh)  # fmt: skip
        rows.append(report.make_row("chat-scale", workers, c, modes["chat"], m, None))
        shares = ", ".join(f"{pid}: {share:.0%}" for pid, share in m.worker_cpu_share.items())
        print(f"     workers={workers}: {m.result.rps:.0f} rps; CPU share per server process: {shares}")
    return rows


def _profile(stack: BenchStack, modes: dict[str, scenarios.Mode], args: argparse.Namespace,
             use_wrk: bool) -> dict[str, Any] | None:  # fmt: skip
    assert stack.server is not None
    pid = worker_pids(stack.server.pid)[0]
    spec = scenarios.spec_for(stack, scenarios.BY_NAME["chat"], relay=True, mode=modes["chat"])
    out = stack.root / "profile-collapsed.txt"
    print(f"run  profile    py-spy on worker {pid}, chat c=32 for {args.profile}s ...", flush=True)
    drive(spec, concurrency=32, requests=2000, duration_s=1.0)  # warm
    spy = bench_profile.record(pid, args.profile, out, native=args.profile_native)
    time.sleep(0.5)  # py-spy attaches
    load = dict(concurrency=32, requests=10**9, duration_s=args.profile)
    result = run_wrk(spec, threads=2, **load) if use_wrk else drive(spec, **load)  # type: ignore[arg-type]
    try:
        spy.wait(timeout=args.profile + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not out.exists():
        print(f"profile: py-spy wrote nothing: {(spy.stdout.read() if spy.stdout else '')[-500:]}", file=sys.stderr)
        return None
    prof = bench_profile.parse(out.read_text())
    text = bench_profile.render(prof)
    header = f"worker {pid}, non-streaming chat c=32 ({modes['chat'].name} mode), {result.rps:.0f} rps during sampling\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile.txt").write_text(header + text + "\n")
    print(header + text)
    return {"worker_pid": pid, "rps": round(result.rps, 1), **prof.to_json()}


def _soak(stack: BenchStack, chosen: list[scenarios.Scenario], modes: dict[str, scenarios.Mode],
          args: argparse.Namespace) -> int:  # fmt: skip
    every = args.soak_every or max(1, args.soak // 20)
    result = run_soak(stack, chosen, modes, total=args.soak, every=every, concurrency=args.soak_concurrency)
    verdict = "flat" if result["flat"] else "GROWING"
    print(f"\nsoak: {result['requests']} requests in {result['elapsed_s']}s, {result['errors']} errors; "
          f"worker RSS growth after warm-up {result['growth_mb']} MB ({verdict}); "
          f"max RSS {result['max_rss_mb']} MB, peak {result['max_peak_rss_mb']} MB")  # fmt: skip
    out = args.output.with_name("soak-latest.json")
    report.write_json(out, {**_meta(stack, args, False), "modes": {k: m.name for k, m in modes.items()},
                            "soak": result})  # fmt: skip
    print(f"wrote {out}")
    return 0


def _notes(stack: BenchStack, modes: dict[str, scenarios.Mode], use_wrk: bool) -> list[str]:
    notes = []
    if any(m.name == "test" for m in modes.values()):
        notes.append("mode=test: live routing did not reach the mock, so Relay ran the in-process deterministic "
                     "provider (rly_test_sk_ key); 'direct' is still the mock. Added latency and CPU then measure "
                     "Relay without the upstream hop.")  # fmt: skip
    if stack.seeded is not None:
        notes += stack.seeded.notes
    if not use_wrk:
        notes.append("non-streaming load ran on the Python driver: its own CPU competes with the stack")
    notes.append(f"{os.cpu_count()} cores shared by the load driver, Envoy, workers, Redis, Postgres and the mock")
    return notes


def _meta(stack: BenchStack, args: argparse.Namespace, use_wrk: bool) -> dict[str, Any]:
    wrk = find_wrk()
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "driver": "wrk" if use_wrk else "python",
        "wrk": wrk_version,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "credential": stack.seeded.credential if stack.seeded else None,
    }


if __name__ == "__main__":
    sys.exit(main())
