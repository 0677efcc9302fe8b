"""Where a request's CPU goes, by stage (``bench/run.py --stages S``).

A worker is sampled with py-spy (busy samples only) while one scenario runs at
c=32; each sample is charged to one stage by the frames on its stack, and a
stage's share of the samples times the worker's measured CPU per request gives
its CPU per request.  Envoy, Redis and Postgres are separate processes: their
rows are their own measured CPU per request.

How a sample is charged: walk its stack from the innermost frame outwards; the
first frame that matches a stage rule decides.  Only when none does are the
client-library rules tried, so Redis wire code called from the admission step
counts as admission, while the Redis protocol's own callbacks (run straight
from the event loop, no request on the stack) are their own row.
Time spent in C (gRPC core, uvloop, orjson) is charged to the Python line that
called it, and what runs with no Python frame of Relay's on the stack — gRPC's
receive and write paths and the event loop's wake-ups — is the "event loop +
gRPC core" row.  Envoy's transcoder and its client write are one process and
one row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.profile import Frame, _parse_frame

# (stage, file substring, function substring or "") — first match per frame wins.
Rule = tuple[str, str, str]

_COMMON_HEAD: tuple[Rule, ...] = (
    ("settle", "pipeline/steps/admission.py", "settle"),
    ("auth", "pipeline/steps/authenticate.py", ""),
    ("gRPC receive + decode", "api/openai_wire.py", ""),
    ("gRPC receive + decode", "api/schema_check.py", ""),
    ("gRPC receive + decode", "api/request_guard.py", ""),
    ("gRPC receive + decode", "api/openai_service.py", "decode"),
    ("gRPC receive + decode", "google/protobuf/", ""),
)
_COMMON_TAIL: tuple[Rule, ...] = (
    ("admission", "pipeline/steps/admission.py", ""),
    ("admission", "pipeline/steps/limits.py", ""),
    ("admission", "pipeline/steps/spend.py", ""),
    ("admission", "pipeline/steps/tenant_flags.py", ""),
    ("admission", "pipeline/steps/noisy.py", ""),
    ("admission", "pipeline/steps/budget_route.py", ""),
    ("admission", "pipeline/steps/request_tags.py", ""),
    ("admission", "pipeline/guardrails/", ""),
    ("plan", "pipeline/steps/cache.py", ""),
    ("plan", "pipeline/routing/", ""),
    ("log", "pipeline/steps/meter.py", ""),
    ("log", "observability/", ""),
    ("log", "storage/postgres/request_log.py", ""),
    ("log", "logging_setup.py", ""),
    ("log", "logging/__init__.py", ""),
    ("log", "prometheus_client/", ""),
    # The pipeline's own glue (InferencePipeline.admit, the session's steps) counts as admission:
    # what the request does before its first upstream byte and after its last one.
    ("admission", "pipeline/inference.py", ""),
    ("admission", "pipeline/session.py", ""),
)
# Consulted only when no stage rule matched anywhere on the stack: the client
# libraries' own callbacks, run straight from the event loop.
IO_RULES: tuple[Rule, ...] = (
    ("Redis client I/O (every stage's calls)", "storage/redis/wire.py", ""),
    ("Postgres client I/O", "psycopg/", ""),
    ("background jobs", "relay_server/workers/", ""),
)

NON_STREAM_RULES: tuple[Rule, ...] = (
    *_COMMON_HEAD,
    ("token counting", "text/tokens.py", ""),
    ("token counting", "tiktoken/", ""),
    ("settle", "pipeline/inference.py", "_finish"),
    ("settle", "pipeline/inference.py", "_billable"),
    ("settle", "pipeline/steps/usage_estimate.py", "OutputCounter"),
    ("admission", "pipeline/steps/usage_estimate.py", ""),
    ("upstream call", "providers/", ""),
    ("upstream call", "crypto/", ""),
    ("upstream call", "pipeline/routing/failover.py", ""),
    ("response write", "api/door.py", "serve"),
    ("response write", "api/response_headers.py", ""),
    ("response write", "api/openai_service.py", ""),
    *_COMMON_TAIL,
)

STREAM_RULES: tuple[Rule, ...] = (
    *_COMMON_HEAD,
    ("token counting", "text/tokens.py", ""),
    ("token counting", "tiktoken/", ""),
    ("token counting", "pipeline/steps/usage_estimate.py", "OutputCounter"),
    ("usage extraction", "pipeline/session.py", ""),
    ("usage extraction", "text/chunks.py", ""),
    ("usage extraction", "pipeline/steps/usage_estimate.py", ""),
    ("settle", "pipeline/inference.py", "_finish"),
    ("upstream read/parse", "providers/sse.py", ""),
    ("upstream read/parse", "providers/http_connection.py", ""),
    ("upstream read/parse", "providers/http_message.py", ""),
    ("upstream read/parse", "providers/openai_compat.py", ""),
    ("upstream read/parse", "providers/", ""),
    ("upstream read/parse", "crypto/", ""),
    ("upstream read/parse", "pipeline/routing/failover.py", ""),
    ("framing", "api/openai_service.py", ""),
    ("framing", "api/door.py", "item"),
    ("framing", "api/door.py", "end"),
    ("gRPC write (frame yielded to gRPC)", "api/door.py", "serve"),
    ("gRPC write (frame yielded to gRPC)", "grpc/", ""),
    *_COMMON_TAIL,
)

LOOP = "event loop + gRPC core (receive, write, wake-ups)"
OTHER_THREADS = "other threads"
# Idle waits py-spy still reports as busy (a thread pool worker in queue.get; the log flusher's
# ``time.sleep`` between batches, a leaf at its own loop: its writes show as deeper frames).
_IDLE = (("Thread.run", "threading.py"), ("_worker", "concurrent/futures/thread.py"), ("select", "selectors.py"),
         ("BufferedLineHandler._tick", "relay_server/logging_setup.py"))  # fmt: skip


def classify(frames: Sequence[Frame], rules: Sequence[Rule]) -> str | None:
    """The stage of one sample (root-first frames); None for an idle wait."""
    if not frames:
        return None
    leaf = frames[-1]
    if any(leaf.func.endswith(func) and leaf.file.endswith(tail) for func, tail in _IDLE):
        return None
    for tier in (rules, IO_RULES):
        for frame in reversed(frames):
            for stage, path, func in tier:
                if path in frame.file and (not func or func in frame.func):
                    return stage
    if any(f.func == "Runner.run" for f in frames) or any("asyncio/" in f.file for f in frames):
        return LOOP
    return OTHER_THREADS


@dataclass
class StageSamples:
    total: int = 0
    by_stage: Counter[str] = field(default_factory=Counter)

    def shares(self) -> dict[str, float]:
        return {k: v / self.total for k, v in self.by_stage.most_common()} if self.total else {}


def attribute(collapsed: str, rules: Sequence[Rule]) -> StageSamples:
    """Stage counts from py-spy's raw (collapsed) output."""
    out = StageSamples()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in (_parse_frame(raw) for raw in stack.split(";")) if f is not None]
        stage = classify(frames, rules)
        if stage is None:
            continue
        out.total += int(count_text)
        out.by_stage[stage] += int(count_text)
    return out


def stage_table(samples: StageSamples, worker_ms: float, processes_ms: dict[str, float],
                per: str = "request", divisor: float = 1.0) -> list[dict[str, object]]:  # fmt: skip
    """Rows (stage, µs per ``per``, share of the total): the worker's stages by
    their sample share of ``worker_ms``, then each other process's measured CPU."""
    total_ms = worker_ms + sum(processes_ms.values())
    rows: list[dict[str, object]] = []
    for stage, share in samples.shares().items():
        rows.append({"stage": f"worker: {stage}", "us": 1000 * share * worker_ms / divisor,
                     "share": share * worker_ms / total_ms if total_ms else 0.0})  # fmt: skip
    for name, ms in processes_ms.items():
        rows.append({"stage": name, "us": 1000 * ms / divisor, "share": ms / total_ms if total_ms else 0.0})
    rows.sort(key=lambda r: -float(r["us"]))  # type: ignore[arg-type]
    rows.append({"stage": "total", "us": 1000 * total_ms / divisor, "share": 1.0})
    return [{**r, "per": per} for r in rows]


def render(title: str, rows: Sequence[dict[str, object]]) -> str:
    per = rows[0]["per"] if rows else "request"
    lines = [title, f"  {'stage':58} {'µs/' + str(per):>12} {'share':>6}"]
    for r in rows:
        lines.append(f"  {r['stage']!s:58} {float(r['us']):12.1f} {100 * float(r['share']):5.1f}%")  # type: ignore[arg-type]
    return "\n".join(lines)
