"""Relay against its peers, measured in the same run: ratios and their verdicts.

Absolute figures (ms of CPU, ms added) move with the machine; ratios to a peer
measured on the same cores minutes apart do not, so the targets are ratios:

* CPU per non-streaming request <= 0.8x the peer's (chat, at c=1 and c=32):
  Relay's gateway processes (Envoy + workers) against the peer's process;
  the whole stack's figure (plus Redis and Postgres, which the peer does not
  have) is shown beside it;
* added latency p50 at c=1 <= the peer's (chat);
* streaming throughput at c=32 >= 0.95x direct (the peer's ratio shown);
* TTFT overhead p50 at c=1 <= 1 ms and <= 0.1x the peer's.

Pure functions over the rows ``report.make_row`` / ``peer_row`` build.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.scenarios import Measurement

Row = dict[str, Any]

CPU_RATIO_MAX = 0.8
STREAM_RATIO_MIN = 0.95
TTFT_MAX_MS = 1.0
TTFT_PEER_RATIO_MAX = 0.1


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def peer_row(scenario: str, concurrency: int, peer: str, m: Measurement, direct: Measurement | None) -> Row:
    """One peer run, in the same terms as Relay's rows."""
    r = m.result
    per_req = 1000 / r.ok if r.ok else float("nan")
    row: Row = {
        "scenario": scenario,
        "concurrency": concurrency,
        "peer": peer,
        "result": r.summary(),
        "cpu_ms_per_request": _r(m.cpu_s.get(peer, 0.0) * per_req),
        "mock_cpu_ms_per_request": _r(m.cpu_s.get("mock", 0.0) * per_req),
        "rss_mb": _r(max((x.rss_mb for x in m.worker_memory.values()), default=float("nan")), 1),
        "peak_rss_mb": _r(max((x.peak_rss_mb for x in m.worker_memory.values()), default=float("nan")), 1),
        "foreign_cores": _r(m.foreign_cores, 2),
    }
    if direct is not None:
        d = direct.result
        row["added_p50_ms"] = _r(r.latency_ms(50) - d.latency_ms(50))
        row["added_p99_ms"] = _r(r.latency_ms(99) - d.latency_ms(99))
        row["throughput_ratio"] = _r(r.rps / d.rps if d.rps else float("nan"))
        if r.ttft_s and d.ttft_s:
            row["ttft_overhead_p50_ms"] = _r(r.ttft_ms(50) - d.ttft_ms(50))
    return row


def side_by_side(relay_rows: Sequence[Row], peer_rows: Sequence[Row]) -> list[Row]:
    """One comparison per (scenario, concurrency) measured for both."""
    out: list[Row] = []
    for p in peer_rows:
        rel = next((r for r in relay_rows if r["scenario"] == p["scenario"] and r["concurrency"] == p["concurrency"]
                    and r.get("run", 1) == p.get("run", 1) and "direct" in r), None)  # fmt: skip
        if rel is None:
            continue
        cpu = rel["cpu_ms_per_request"]
        ew = cpu.get("envoy_plus_workers")
        everything = None if ew is None else ew + (cpu.get("redis") or 0) + (cpu.get("postgres") or 0)
        peer_cpu = p.get("cpu_ms_per_request")
        ttft_relay, ttft_peer = rel.get("ttft_overhead_p50_ms"), p.get("ttft_overhead_p50_ms")
        added_relay, added_peer = rel.get("added_p50_ms"), p.get("added_p50_ms")
        out.append({
            "scenario": p["scenario"], "concurrency": p["concurrency"], "peer": p["peer"], "run": p.get("run", 1),
            "rps_direct": rel["direct"]["rps"], "rps_relay": rel["relay"]["rps"], "rps_peer": p["result"]["rps"],
            "throughput_ratio_relay": rel.get("throughput_ratio"), "throughput_ratio_peer": p.get("throughput_ratio"),
            "added_p50_relay_ms": added_relay, "added_p50_peer_ms": added_peer,
            "added_p50_diff_ms": _r(added_relay - added_peer) if added_relay is not None and added_peer is not None
            else None,
            "ttft_overhead_p50_relay_ms": ttft_relay, "ttft_overhead_p50_peer_ms": ttft_peer,
            "ttft_overhead_ratio": _r(_div(ttft_relay, ttft_peer)),
            "cpu_relay_ms": ew, "cpu_relay_all_ms": _r(everything), "cpu_peer_ms": peer_cpu,
            "cpu_ratio": _r(_div(ew, peer_cpu)), "cpu_ratio_all": _r(_div(everything, peer_cpu)),
            "errors_relay": rel["relay"]["errors"], "errors_peer": p["result"]["errors"],
        })  # fmt: skip
    return out


def _find(rows: Sequence[Row], scenario: str, concurrency: int) -> Row | None:
    return next((r for r in rows if r["scenario"] == scenario and r["concurrency"] == concurrency), None)


def _verdict(name: str, measured: str, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"target": name, "measured": measured, "met": met, "note": note}


def targets(comparisons: Sequence[Row]) -> list[dict[str, Any]]:
    """The peer-relative targets; a target whose rows were not measured is left out."""
    out: list[dict[str, Any]] = []
    peer = comparisons[0]["peer"] if comparisons else "peer"
    chats = [c for c in (_find(comparisons, "chat", 1), _find(comparisons, "chat", 32)) if c]
    if chats:
        ratios = [c["cpu_ratio"] for c in chats]
        parts = [f"c={c['concurrency']}: {c['cpu_relay_ms']} vs {c['cpu_peer_ms']} ms = {c['cpu_ratio']}x "
                 f"(with Redis+Postgres {c['cpu_ratio_all']}x)" for c in chats]  # fmt: skip
        met = None if None in ratios else all(r <= CPU_RATIO_MAX for r in ratios)
        out.append(_verdict(f"CPU per chat request (Envoy+workers) <= {CPU_RATIO_MAX}x {peer}'s", "; ".join(parts), met))
    chat1 = _find(comparisons, "chat", 1)
    if chat1:
        a, b = chat1["added_p50_relay_ms"], chat1["added_p50_peer_ms"]
        met = None if a is None or b is None else a <= b
        out.append(_verdict(f"added latency p50 at c=1 <= {peer}'s", f"+{a} vs +{b} ms (diff {chat1['added_p50_diff_ms']})",
                            met))  # fmt: skip
    stream32 = _find(comparisons, "stream", 32)
    if stream32:
        ratio = stream32["throughput_ratio_relay"]
        out.append(_verdict(f"streaming throughput at c=32 >= {STREAM_RATIO_MIN}x direct",
                            f"{ratio}x ({peer} {stream32['throughput_ratio_peer']}x)",
                            None if ratio is None else ratio >= STREAM_RATIO_MIN))  # fmt: skip
    stream1 = _find(comparisons, "stream", 1)
    if stream1:
        t, tp, q = stream1["ttft_overhead_p50_relay_ms"], stream1["ttft_overhead_p50_peer_ms"], stream1["ttft_overhead_ratio"]
        met = None if t is None or q is None else (t <= TTFT_MAX_MS and q <= TTFT_PEER_RATIO_MAX)
        out.append(_verdict(f"TTFT overhead p50 at c=1 <= {TTFT_MAX_MS} ms and <= {TTFT_PEER_RATIO_MAX}x {peer}'s",
                            f"+{t} vs +{tp} ms = {q}x", met))  # fmt: skip
    return out


def across_runs(per_run: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One verdict per target over several runs: met only if met in every run
    (unknown if unknown in any), with each run's figures and the count of runs met."""
    if len(per_run) == 1:
        return list(per_run[0])
    out: list[dict[str, Any]] = []
    names = list(dict.fromkeys(v["target"] for run in per_run for v in run))
    for name in names:
        found = [next((v for v in run if v["target"] == name), None) for run in per_run]
        marks = [v["met"] if v is not None else None for v in found]
        met = None if None in marks else all(marks)
        measured = " | ".join(f"run {i}: {v['measured'] if v else '-'}" for i, v in enumerate(found, 1))
        out.append(_verdict(name, measured, met, f"met in {sum(m is True for m in marks)} of {len(per_run)} runs"))
    return out


def floor_targets(peer_rows: Sequence[Row], floor_rows: Sequence[Row], runs: int) -> list[dict[str, Any]]:
    """Could *any* gateway of Relay's architecture meet each target?  The floor
    (``bench/floor_gateway.py``: Relay's Envoy, grpc.aio and upstream client, no
    pipeline) judged by the same targets against the peer of the same run.  A
    target the floor misses cannot be met by adding Relay's steps on top of it."""
    per_run: list[list[dict[str, Any]]] = []
    for run in range(1, runs + 1):
        def pick(rows: Sequence[Row], scenario: str, c: int, run: int = run) -> Row | None:
            return next((r for r in rows if r["scenario"] == scenario and r["concurrency"] == c
                         and r.get("run", 1) == run), None)  # fmt: skip

        verdicts: list[dict[str, Any]] = []
        chats: list[tuple[int, Row, Row]] = []
        for c in (1, 32):
            f, p = pick(floor_rows, "chat", c), pick(peer_rows, "chat", c)
            if f and p:
                chats.append((c, f, p))
        if chats:
            ratios = [_div(f["cpu_ms_per_request"], p["cpu_ms_per_request"]) for _, f, p in chats]
            parts = [f"c={c}: {f['cpu_ms_per_request']} vs {p['cpu_ms_per_request']} ms = {_r(q)}x"
                     for (c, f, p), q in zip(chats, ratios)]  # fmt: skip
            met = None if None in ratios else all(q <= CPU_RATIO_MAX for q in ratios if q is not None)
            verdicts.append(_verdict(f"floor: CPU per chat request <= {CPU_RATIO_MAX}x the peer's", "; ".join(parts), met))
        f1, p1 = pick(floor_rows, "chat", 1), pick(peer_rows, "chat", 1)
        if f1 and p1:
            a, b = f1.get("added_p50_ms"), p1.get("added_p50_ms")
            verdicts.append(_verdict("floor: added latency p50 at c=1 <= the peer's", f"+{a} vs +{b} ms",
                                     None if a is None or b is None else a <= b))  # fmt: skip
        f32 = pick(floor_rows, "stream", 32)
        if f32:
            q = f32.get("throughput_ratio")
            verdicts.append(_verdict(f"floor: streaming throughput at c=32 >= {STREAM_RATIO_MIN}x direct", f"{q}x",
                                     None if q is None else q >= STREAM_RATIO_MIN))  # fmt: skip
        fs1, ps1 = pick(floor_rows, "stream", 1), pick(peer_rows, "stream", 1)
        if fs1 and ps1:
            t, tp = fs1.get("ttft_overhead_p50_ms"), ps1.get("ttft_overhead_p50_ms")
            q = _div(t, tp)
            met = None if t is None or q is None else (t <= TTFT_MAX_MS and q <= TTFT_PEER_RATIO_MAX)
            verdicts.append(_verdict(f"floor: TTFT overhead p50 at c=1 <= {TTFT_MAX_MS} ms and <= {TTFT_PEER_RATIO_MAX}x the peer's",
                                     f"+{t} vs +{tp} ms = {_r(q)}x", met))  # fmt: skip
        per_run.append(verdicts)
    return across_runs(per_run)


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


_COLUMNS = (("run", 3), ("scenario", 10), ("c", 3), ("rps d/relay/peer", 20), ("ratio relay/peer", 16), ("+p50 relay/peer", 16),
            ("+ttft50 relay/peer", 18), ("cpu ms/req relay(e+w)/relay(all)/peer", 38), ("cpu ratio", 9), ("err", 7))  # fmt: skip


def table(comparisons: Sequence[Row]) -> str:
    head = "  ".join(name.ljust(width) for name, width in _COLUMNS)
    lines = [head, "-" * len(head)]
    for c in comparisons:
        cells = (
            c.get("run", 1), c["scenario"], c["concurrency"],
            f"{_f(c['rps_direct'], '{:.0f}')}/{_f(c['rps_relay'], '{:.0f}')}/{_f(c['rps_peer'], '{:.0f}')}",
            f"{_f(c['throughput_ratio_relay'])}/{_f(c['throughput_ratio_peer'])}",
            f"{_f(c['added_p50_relay_ms'])}/{_f(c['added_p50_peer_ms'])}",
            f"{_f(c['ttft_overhead_p50_relay_ms'])}/{_f(c['ttft_overhead_p50_peer_ms'])}",
            f"{_f(c['cpu_relay_ms'], '{:.3f}')}/{_f(c['cpu_relay_all_ms'], '{:.3f}')}/{_f(c['cpu_peer_ms'], '{:.3f}')}",
            _f(c["cpu_ratio"]), f"{c['errors_relay']}/{c['errors_peer']}",
        )  # fmt: skip
        lines.append("  ".join(str(cell).ljust(width) for cell, (_, width) in zip(cells, _COLUMNS)))
    return "\n".join(lines)
