"""The Python load drivers: closed-loop requests and streaming clients.

``drive`` runs ``concurrency`` loops, each on its own keep-alive connection,
until ``requests`` were sent or ``duration_s`` passed, whichever comes first.
For streams it measures the time to the first content token (TTFT: the first
SSE chunk whose ``delta.content`` is not empty) and the time to
``data: [DONE]`` separately.  Latencies are wall-clock from writing the request
to reading the last byte.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass, field

import orjson

from bench.http1 import Connection, HttpError, Target, render_request


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    driver: str
    concurrency: int
    ok: int = 0
    errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    content_chunks: int = 0
    # Filled by wrk, which reports percentiles rather than raw samples.
    wrk_percentiles_ms: dict[str, float] = field(default_factory=dict)
    first_error: str = ""

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        if self.wrk_percentiles_ms:
            return self.wrk_percentiles_ms.get(f"p{q:g}", float("nan"))
        return percentile(self.latencies_s, q) * 1000

    def ttft_ms(self, q: float) -> float:
        return percentile(self.ttft_s, q) * 1000

    @property
    def chunks_per_s(self) -> float:
        return self.content_chunks / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "driver": self.driver,
            "concurrency": self.concurrency,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.latency_ms(50), 3),
            "p90_ms": round(self.latency_ms(90), 3),
            "p99_ms": round(self.latency_ms(99), 3),
        }
        if self.ttft_s:
            out.update(
                ttft_p50_ms=round(self.ttft_ms(50), 3),
                ttft_p99_ms=round(self.ttft_ms(99), 3),
                content_chunks_per_s=round(self.chunks_per_s, 1),
            )
        if self.first_error:
            out["first_error"] = self.first_error[:300]
        return out


@dataclass(frozen=True)
class RequestSpec:
    url: str
    body: bytes
    headers: Mapping[str, str]
    stream: bool = False


def _content_in(event: bytes) -> bool:
    """Does one SSE event carry a non-empty content delta?"""
    if not event.startswith(b"data: ") or event.startswith(b"data: [DONE]"):
        return False
    try:
        chunk = orjson.loads(event[6:])
    except orjson.JSONDecodeError:
        return False
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return False
    delta = choices[0].get("delta") or {}
    return bool(isinstance(delta, dict) and delta.get("content"))


async def _one_stream(conn: Connection, raw: bytes, result: LoadResult, started: float) -> tuple[int, float | None]:
    """Read one SSE response; (status, TTFT seconds or None).  Counts content chunks."""
    status = 0
    ttft: float | None = None
    buffer = b""
    saw_done = False
    async with aclosing(conn.stream(raw)) as pieces:
        async for piece in pieces:
            if isinstance(piece, int):
                status = piece
                continue
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.startswith(b"data: [DONE]"):
                    saw_done = True
                elif _content_in(event):
                    result.content_chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
                elif event.startswith(b'data: {"error"'):
                    status = 599  # an in-band error: the stream failed after its headers
    if status == 200 and not saw_done:
        status = 598  # cut before data: [DONE]
    return status, ttft


async def _loop(spec: RequestSpec, raw: bytes, result: LoadResult, budget: list[int], deadline: float) -> None:
    conn = Connection(Target.parse(spec.url))
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                if spec.stream:
                    status, ttft = await _one_stream(conn, raw, result, started)
                else:
                    status, body = await conn.request(raw)
                    ttft = None
                    if status != 200 and not result.first_error:
                        result.first_error = f"{status}: {body[:300]!r}"
            except HttpError as exc:
                result.errors += 1
                result.statuses["io_error"] += 1
                result.first_error = result.first_error or str(exc)
                await asyncio.sleep(0.01)  # a dead server must not turn this into a busy loop
                continue
            elapsed = time.perf_counter() - started
            result.statuses[str(status)] += 1
            if status == 200:
                result.ok += 1
                result.latencies_s.append(elapsed)
                if ttft is not None:
                    result.ttft_s.append(ttft)
            else:
                result.errors += 1
    finally:
        conn.close()


async def drive_async(spec: RequestSpec, *, concurrency: int, requests: int, duration_s: float) -> LoadResult:
    if concurrency < 1 or requests < 1 or duration_s <= 0:
        raise ValueError("concurrency and requests must be >= 1 and duration_s > 0")
    target = Target.parse(spec.url)
    raw = render_request(target, "POST", spec.headers, spec.body)
    result = LoadResult("python", concurrency)
    budget = [requests]
    started = time.perf_counter()
    deadline = started + duration_s
    loops = [asyncio.create_task(_loop(spec, raw, result, budget, deadline)) for _ in range(concurrency)]
    # A hung response must not hold the bench past its bound: connections time out
    # after 30 s, and everything is cancelled a little after that at the latest.
    done, pending = await asyncio.wait(loops, timeout=duration_s + 35)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None and not result.first_error:
            result.first_error = repr(task.exception())
    result.duration_s = time.perf_counter() - started
    return result


def drive(spec: RequestSpec, *, concurrency: int, requests: int, duration_s: float) -> LoadResult:
    """Blocking wrapper: runs the drivers on a fresh event loop (uvloop when available)."""
    try:
        import uvloop

        return uvloop.run(drive_async(spec, concurrency=concurrency, requests=requests, duration_s=duration_s))
    except ImportError:
        return asyncio.run(drive_async(spec, concurrency=concurrency, requests=requests, duration_s=duration_s))
