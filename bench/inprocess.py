"""Relay's own per-request CPU, without gRPC and Envoy: the servicer called in process.

The bench's stack (Postgres, Redis, the mock upstream, a seeded tenant, key and
sealed credential) is started as ``bench/run.py`` starts it; this process then
builds a second, in-process app from the same settings (``app.build``) and calls
``OpenAIServicer.CreateChatCompletion`` directly with a minimal servicer context
— what a request costs in Relay's own Python: auth, admission, routing, the
upstream call (over Relay's HTTP client, to the mock), metering, the request log.
What it leaves out is exactly the architecture's floor (bench/floor_gateway.py:
Envoy, grpc.aio), so the two add up to the whole.

    PYTHONPATH=server:proto_python:. .venv/bin/python -m bench.inprocess --requests 3000 --concurrency 32
    ... --profile out.prof   # cProfile of the measured requests (deterministic call counts)

Prints CPU µs per request (this process: the event loop, Relay's Python, the
drivers' socket I/O; not Postgres, Redis or the mock), Redis commands per request
and the garbage collector's share.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sys
import time
from collections.abc import Sequence
from typing import Any

from google.api import httpbody_pb2

from bench.stack import StackOptions, new_stack

_STREAM_BODY = (
    b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}],'
    b'"max_tokens":32}'
)
_BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}'
)


class Context:
    """What the OpenAI door uses of ``grpc.aio.ServicerContext``."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)
        self.headers: Any = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def send_initial_metadata(self, headers: Any) -> None:
        self.headers = headers

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        raise RuntimeError(f"request refused: {code} {details}")

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


async def _measure(stack: Any, args: argparse.Namespace) -> None:
    from relay_server import logging_setup  # noqa: PLC0415 (after the environment is set)
    from relay_server.api.openai_service import OpenAIServicer  # noqa: PLC0415
    from relay_server.app import build, freeze_startup_heap, relax_young_gc, start_observability  # noqa: PLC0415
    from relay_server.pipeline.routing.model_names import ModelNames  # noqa: PLC0415
    from relay_server.settings import Settings  # noqa: PLC0415

    settings = Settings.from_env(os.environ)
    logging_setup.configure(settings.log_level)  # as a worker: one JSON line per request (to stderr)
    app = await build(settings)
    await app.tenancy.start()
    start_observability(app)
    freeze_startup_heap()  # as a worker does once it serves
    relax_young_gc()
    models = ModelNames(app.catalog, app.routing.virtual)
    servicer = OpenAIServicer(app.pipeline, app.authenticator, models, observability=app.observability)
    metadata = [("authorization", f"Bearer {stack.seeded.live_key}"), ("content-type", "application/json")]
    body = _STREAM_BODY if args.stream else _BODY
    request = httpbody_pb2.HttpBody(content_type="application/json", data=body)

    async def one() -> None:
        frames = [f async for f in servicer.CreateChatCompletion(request, Context(metadata))]
        assert frames and b'"choices"' in frames[0].data, frames
        assert not args.stream or frames[-1].data.endswith(b"data: [DONE]\n\n"), frames[-1]

    async def drive(n: int) -> None:
        per = max(1, n // args.concurrency)
        await asyncio.gather(*(_loop(one, per) for _ in range(args.concurrency)))

    await drive(min(500, args.requests))  # warm: caches, pools, the upstream connections
    await app.pipeline.drain()
    redis = _RedisCommands(stack.redis_url)
    collector = GcTimer()
    profiler = cProfile.Profile() if args.profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    await drive(args.requests)
    await app.pipeline.drain()  # metering and settlement belong to the request's cost
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    collector.stop()
    n = max(1, args.requests // args.concurrency) * args.concurrency
    print(
        f"in-process {'stream' if args.stream else 'chat'} c={args.concurrency}: {n} requests, {cpu / n * 1e6:.0f} µs CPU per request, {n / wall:.0f} req/s"
    )
    print(redis.per_request(n))
    print(collector.per_request(n))
    if profiler is not None:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(profiler).sort_stats("tottime")
        stats.print_stats(args.top)
    await app.close()


class GcTimer:
    """The garbage collector's runs and CPU time while it is on (``gc.callbacks``), by generation."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.cpu_s = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        generation = info["generation"]
        self.runs[generation] += 1
        self.cpu_s[generation] += time.process_time() - self._started

    def stop(self) -> None:
        gc.callbacks.remove(self._note)

    def per_request(self, n: int) -> str:
        parts = ", ".join(f"gen {g} {self.runs[g]} runs {self.cpu_s[g] / n * 1e6:.1f} µs" for g in range(3))
        return f"GC: {sum(self.cpu_s) / n * 1e6:.1f} µs per request ({parts})"


class _RedisCommands:
    """Redis commands per request, from the server's own counters (reset before the measured run)."""

    def __init__(self, url: str) -> None:
        import redis  # noqa: PLC0415

        self._client = redis.Redis.from_url(url)
        self._client.config_resetstat()

    def per_request(self, n: int) -> str:
        stats = self._client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()}
        calls.pop("info", None)
        total = sum(calls.values())
        top = ", ".join(f"{name} {count / n:.2f}" for name, count in sorted(calls.items(), key=lambda kv: -kv[1]))
        return f"Redis: {total / n:.2f} commands per request ({top})"


async def _loop(one: Any, n: int) -> None:
    for _ in range(n):
        await one()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument(
        "--stream", action="store_true", help="streamed chat (the mock's chunks, without its pause between them)"
    )
    p.add_argument("--chunk-interval-ms", type=float, default=0.0,
                   help="--stream: the mock's pause between chunks (0: back to back; run.py's streams use 5)")
    p.add_argument("--profile", default="", help="write a cProfile of the measured requests here")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args(argv)
    stack = new_stack(StackOptions(chunk_interval_ms=args.chunk_interval_ms) if args.stream else StackOptions())
    try:
        stack.start()
        for key, value in stack.server_env(1).items():
            os.environ[key] = value
        os.environ["RELAY_METRICS_PORT"] = "0"  # the stack's own worker serves the port; metrics are still kept
        import uvloop  # noqa: PLC0415

        uvloop.run(_measure(stack, args))
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
