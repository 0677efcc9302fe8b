"""The floor of Relay's architecture: its Envoy, grpc.aio and its upstream client, no pipeline.

Relay serves REST through Envoy's gRPC-JSON transcoder in front of a Python ``grpc.aio``
server.  This gateway keeps exactly those parts — the same rendered Envoy config (Lua error
filter, transcoder, router), the same descriptor, a grpc.aio server on uvloop with
``so_reuseport``, Relay's own keep-alive upstream client — and nothing else: no auth, limits,
caps, routing, metering, request log, initial metadata, nor parsing of the upstream's
stream (its bytes are passed through as they are read).  What it costs per request is
therefore a lower bound on what *any* Relay built this way costs on the same machine, and
measured in the same run as the peer it says whether a peer-relative target is reachable
without changing the architecture (``--floor`` in ``bench/run.py``; bench/README.md).

Run as a process of its own (the bench charges its CPU and its Envoy child's to it):

    python -m bench.floor_gateway --upstream http://127.0.0.1:PORT/v1 --http-port P --grpc-port G \
        --admin-port A --dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import orjson
from google.api import httpbody_pb2

from bench.peers import Peer
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.translator import UpstreamRequest
from relay_server.stack import envoy as stack_envoy
from relay_server.stack import processes
from relay_server.stack.up import DESCRIPTOR

SERVICE = "relay.v1.OpenAIService"
_TIMEOUTS = Timeouts(connect_s=5.0, first_byte_s=30.0, idle_s=30.0)
_TOTAL_S = 120.0
_JSON = "application/json"
_SSE = "text/event-stream"


class Floor:
    """``CreateChatCompletion`` as a pass-through: the body to the upstream, its answer back."""

    def __init__(self, upstream: str) -> None:
        self._url = upstream.rstrip("/") + "/chat/completions"
        self._client: HttpClient | None = None

    def client(self) -> HttpClient:
        if self._client is None:
            self._client = HttpClient.create(allow_private=True)
        return self._client

    async def chat(self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        body = orjson.loads(request.data)  # every gateway reads the body at least to see "stream"
        req = UpstreamRequest("POST", self._url, {"authorization": "Bearer sk-floor", "content-type": _JSON}, body)
        client = self.client()
        if not body.get("stream"):
            answer = await client.send(req, _TIMEOUTS, _TOTAL_S)
            yield httpbody_pb2.HttpBody(content_type=_JSON, data=answer.body)
            return
        async with client.open_stream(req, _TIMEOUTS, _TOTAL_S) as stream:
            # The upstream's bytes as read: no SSE parse, no usage, no re-encoding.
            conn = stream._live()  # noqa: SLF001 (bench code: the raw reads are the point)
            while chunk := await conn.read_some():
                yield httpbody_pb2.HttpBody(content_type=_SSE, data=chunk)


async def serve(upstream: str, grpc_port: int, stop: asyncio.Event) -> None:
    floor = Floor(upstream)
    handler = grpc.unary_stream_rpc_method_handler(
        floor.chat, request_deserializer=httpbody_pb2.HttpBody.FromString,
        response_serializer=httpbody_pb2.HttpBody.SerializeToString,
    )  # fmt: skip
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"CreateChatCompletion": handler}),))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await stop.wait()
    await server.stop(1)


def start_envoy(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """Relay's own Envoy config, pointed at this process's gRPC port."""
    root = Path(args.dir)
    config = stack_envoy.render_envoy_config(
        http_port=args.http_port, grpc_host="127.0.0.1", grpc_port=args.grpc_port, admin_port=args.admin_port,
        descriptor_path=DESCRIPTOR, services=stack_envoy.http_services(DESCRIPTOR),
        max_request_bytes=32 * 1024 * 1024, access_log_path=root / "floor-access.log",
    )  # fmt: skip
    path = root / "floor-envoy.yaml"
    path.write_text(config)
    argv = stack_envoy.envoy_command(path, concurrency=args.envoy_concurrency)
    log = (root / "floor-envoy.log").open("ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    finally:
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.floor_gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="the mock's base URL, e.g. http://127.0.0.1:PORT/v1")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--admin-port", type=int, required=True)
    p.add_argument("--envoy-concurrency", type=int, default=2)
    p.add_argument("--dir", required=True, help="where the rendered Envoy config and its logs go")
    args = p.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415

        uvloop.install()
    envoy = start_envoy(args)
    try:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.run_until_complete(serve(args.upstream, args.grpc_port, stop))
    finally:
        envoy.terminate()
        try:
            envoy.wait(10)
        except subprocess.TimeoutExpired:
            envoy.kill()
    return 0


def start_floor(mock_url: str, root: Path, envoy_concurrency: int) -> Peer:
    """The floor gateway as a bench peer (its CPU = this process + its Envoy)."""
    http_port, grpc_port, admin_port = processes.free_port(), processes.free_port(), processes.free_port()
    argv = [sys.executable, "-m", "bench.floor_gateway", "--upstream", mock_url, "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), "--admin-port", str(admin_port), "--dir", str(root),
            "--envoy-concurrency", str(envoy_concurrency)]  # fmt: skip
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(repo / p) for p in ("server", "proto_python", "."))}
    log = (root / "floor.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=repo, env=env)
    log.close()
    peer = Peer("floor", "envoy+grpc.aio", proc, http_port)
    deadline = time.monotonic() + 60
    while not (stack_envoy.envoy_ready(admin_port) and processes.port_open("127.0.0.1", http_port)):
        if proc.poll() is not None or time.monotonic() > deadline:
            peer.stop()
            raise RuntimeError(f"the floor gateway did not start (see {root / 'floor.log'})")
        time.sleep(0.05)
    return peer


if __name__ == "__main__":
    sys.exit(main())
